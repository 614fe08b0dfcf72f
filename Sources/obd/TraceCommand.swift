import ArgumentParser
import BlockIO
import Trace

/// `obd trace`: attach a trace or a priority list to an image as an acceleration layer,
/// read a trace file, and drive the recording of a running device.
struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Acceleration layers and traces: attach, inspect, record, stop.",
        discussion: """
            A trace records which layer ranges a workload read (overlaybd's binary format); a \
            priority list names files, one path per line. Either can be replayed at image open \
            (recordTracePath, or an acceleration layer). See formats/Trace.md.
            """,
        subcommands: [TraceAttachCommand.self, TraceInspectCommand.self, TraceRecordCommand.self, TraceStopCommand.self])
}

/// The bytes of a trace or priority list file (at most a trace's largest size).
func readTraceFile(_ path: String) throws -> [UInt8] {
    let f = try LocalFile(path: path, map: false)
    let limit = UInt64(TraceFormat.headerSize) + TraceFormat.maxRecords * UInt64(TraceFormat.recordSize)
    guard f.size <= limit else { throw CLIError("\(path): \(f.size) bytes is larger than any trace (at most \(limit))") }
    return try f.readBytes(at: 0, count: Int(f.size))
}
