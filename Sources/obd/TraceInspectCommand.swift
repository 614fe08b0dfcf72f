import ArgumentParser
import Trace

/// `obd trace inspect FILE`: a trace's header, records and per-layer totals, or a priority list's paths.
struct TraceInspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a trace file: whether its checksum holds, per-layer totals and its records (or a priority list's paths).",
        discussion: """
            A file that starts with the trace magic is read as overlaybd's binary trace: the header, \
            whether the checksum holds, read records and bytes per layer index, then one line per \
            record (op, layer, offset, count). Any other non-empty file is a priority list: its \
            paths, which of them walk a directory, and the lines that are not usable. Exits with 1 \
            when the checksum does not hold or the file is not a valid trace or list.
            """)

    @Argument(help: "A trace (or priority list) file.") var file: String
    @Flag(name: .customLong("no-records"), help: "Leave out the records (or paths); only the summary.") var noRecords = false

    func run() throws {
        try runReportingErrors {
            let bytes = try readTraceFile(file)
            print("file: \(file)")
            guard !bytes.isEmpty else {
                print("format: empty (an empty file at recordTracePath asks for a recording)")
                return
            }
            guard TraceFormat.hasMagic(bytes) else { return try list(bytes) }
            let t = try TraceInspection(bytes: bytes, path: file)
            print("format: binary trace (overlaybd)")
            print("records: \(t.records.count) (data size \(t.dataSize) bytes)")
            if t.checksumHolds {
                print("checksum: 0x\(String(t.storedChecksum, radix: 16)) holds")
            } else {
                print("checksum: 0x\(String(t.storedChecksum, radix: 16)) stored, 0x\(String(t.computedChecksum, radix: 16)) computed: does NOT hold (obd does not replay this trace)")
            }
            for l in t.layers {
                print("layer \(l.layer): \(l.reads) reads, \(l.bytes) bytes" + (l.writes > 0 ? ", \(l.writes) write records" : ""))
            }
            if !noRecords {
                print("index\top\tlayer\toffset\tcount")
                for (i, r) in t.records.enumerated() {
                    let op = r.op == TraceRecord.read ? "R" : "W"
                    print("\(i)\t\(op)\t\(r.layerIndex)\t\(r.offset)\t\(r.count)")
                }
            }
            guard t.checksumHolds else { throw CLIError("\(file): the checksum does not hold") }
        }
    }

    func list(_ bytes: [UInt8]) throws {
        let l = try PriorityList(bytes: bytes, path: file)
        let walks = l.entries.filter(\.walk).count
        print("format: priority list (not a binary trace: no trace magic)")
        print("paths: \(l.entries.count) (\(walks) directory walks), \(l.skipped.count) lines skipped, \(bytes.count) of at most \(PriorityList.maxSize) bytes")
        if !noRecords {
            for e in l.entries { print("line \(e.line)\t\(e.walk ? "walk" : "file")\t\(e.path)") }
        }
        for s in l.skipped { print("line \(s.line)\tskipped\t\(s.reason)") }
    }
}
