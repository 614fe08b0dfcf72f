import ArgumentParser
import BlockIO
import Convert
import Glibc
import Image

/// `obd trace record CONFIG`: arms overlaybd's record mode for the image of CONFIG.
struct TraceRecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Arm trace recording for an image: make the empty trace file at its recordTracePath.",
        discussion: """
            overlaybd's protocol, which obd-tcmu and obd serve nbd follow: an empty file at the \
            config's recordTracePath means "record". The next time the image opens (the device is \
            attached, or obd serve nbd starts) it creates <trace>.lock and records every read of the \
            lowers until the lock is removed (obd trace stop) or the image closes; then it writes the \
            trace and creates <trace>.ok. A device that is already open does not notice the new file: \
            re-attach it. With --trace PATH the config's recordTracePath is set to PATH first \
            (relative paths are resolved against the config's folder, as every path of the config).
            """)

    @Argument(help: "The image's config.v1.json.") var config: String
    @Option(name: .long, help: "Set recordTracePath in the config to this path first.") var trace: String?
    @Flag(name: .shortAndLong, help: "Replace a non-empty file (an earlier trace or a priority list) at the trace path.") var force = false

    func run() throws {
        try runReportingErrors {
            if let trace {
                var json = try JSONValue.parse(readTraceFile(config))
                guard case .object = json else { throw CLIError("\(config): not a JSON object") }
                json["recordTracePath"] = .string(trace)
                let tmp = config + ".tmp-\(getpid())"
                let f = try LocalFile(path: tmp, mode: .createTruncate)
                try f.writeBytes(try json.bytes() + [0x0A], at: 0)
                try f.flush()
                guard rename(tmp, config) == 0 else { throw CLIError("\(config): rename from \(tmp): \(String(cString: strerror(errno)))") }
            }
            let c = try ImageConfig.load(path: config)
            guard !c.recordTracePath.isEmpty else { throw CLIError("\(config) has no recordTracePath; give --trace PATH") }
            guard !c.accelerationLayer else { throw CLIError("\(config): accelerationLayer and a recording do not go together (overlaybd refuses the image)") }
            let path = c.resolve(c.recordTracePath)
            if access(path + ".lock", F_OK) == 0 {
                throw CLIError("\(path).lock exists: a recording runs (obd trace stop \(config) ends it), or an earlier one did not finish (remove the lock)")
            }
            var st = stat()
            if stat(path, &st) == 0 && st.st_size > 0 && !force {
                throw CLIError("\(path) holds \(st.st_size) bytes (a trace or a priority list, which the image would replay); -f empties it")
            }
            try LocalFile(path: path, mode: .createTruncate).flush()
            unlink(path + ".ok")
            print("armed: \(path) is empty; the next open of \(config) records into it (obd trace stop \(config) ends the recording)")
        }
    }
}
