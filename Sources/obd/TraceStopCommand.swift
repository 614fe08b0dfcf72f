import ArgumentParser
import Glibc
import Image
import Threading
import Trace

/// `obd trace stop CONFIG`: ends a running recording the overlaybd way and waits for it.
struct TraceStopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "End the recording of a running device: remove <trace>.lock, wait for <trace>.ok.",
        discussion: """
            The device checks about once a second whether <trace>.lock still exists; once it is gone \
            it writes the trace and creates <trace>.ok, which this command waits for (at most \
            --timeout seconds, as ACI's ctr record-trace waits). Then it prints the trace's size.
            """)

    @Argument(help: "The image's config.v1.json.") var config: String
    @Option(name: .long, help: "Seconds to wait for <trace>.ok.") var timeout: Double = 60

    func run() throws {
        try runReportingErrors {
            guard timeout > 0 else { throw CLIError("--timeout: \(timeout) is not positive") }
            let c = try ImageConfig.load(path: config)
            guard !c.recordTracePath.isEmpty else { throw CLIError("\(config) has no recordTracePath") }
            let path = c.resolve(c.recordTracePath)
            let lock = path + ".lock", ok = path + ".ok"
            if unlink(lock) != 0 {
                let e = errno
                guard e == ENOENT else { throw CLIError("\(lock): cannot remove: \(String(cString: strerror(e)))") }
                guard access(ok, F_OK) == 0 else {
                    throw CLIError("\(lock) does not exist: no recording runs for \(config) (is the device open, with an empty file at \(path)?)")
                }
                print("the recording had already ended")
            }
            let deadline = monotonicSeconds() + timeout
            while access(ok, F_OK) != 0 {
                guard monotonicSeconds() < deadline else {
                    throw CLIError("no \(ok) after \(timeout) s: the device did not finish the trace (is it still open?)")
                }
                usleep(100_000)
            }
            let records = try TraceFormat.read(path: path)
            print("recorded \(path): \(records.count) records, \(records.reduce(0) { $0 + $1.count }) bytes read")
        }
    }
}
