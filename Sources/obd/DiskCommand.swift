import ArgumentParser
import Daemon
import FoundationEssentials
import Glibc

/// `obd disk`: the control API's client.
struct DiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Add, remove, list and inspect the disks of a running `obd daemon`.",
        subcommands: [DiskAddCommand.self, DiskRemoveCommand.self, DiskListCommand.self, DiskStatsCommand.self])
}

/// The daemon's socket, shared by every `obd disk` subcommand.
struct DaemonSocketOption: ParsableArguments {
    @Option(name: .long, help: "Unix socket of the daemon's control API.") var socket: String
    @Option(name: .long, help: "Seconds to wait for the answer.") var timeout: Double = 120

    /// Sends the request; prints the JSON answer on stdout, or the error on stderr (exit 1).
    func call(_ method: String, _ target: String, body: [UInt8]? = nil) throws {
        let reply = try ControlClient.request(socket: socket, method: method, target: target, body: body, timeout: timeout)
        guard (200..<300).contains(reply.status) else {
            struct Body: Decodable { var error: String; var code: String }
            if let b = try? JSONDecoder().decode(Body.self, from: Data(reply.body)) {
                throw CLIError("\(b.error) (\(b.code), HTTP \(reply.status))")
            }
            throw CLIError("HTTP \(reply.status): \(reply.text)")
        }
        print(reply.text, terminator: reply.text.hasSuffix("\n") ? "" : "\n")
    }
}

/// An absolute form of `path` (the daemon may run in another folder).
private func absolute(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { return path }
    let cwd = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return (cwd == "/" ? "" : cwd) + "/" + path
}

struct DiskAddCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a disk: an image config served over vhost-user-blk or NBD, read-only or with a new upper.")

    @OptionGroup var daemon: DaemonSocketOption
    @Argument(help: "Disk id (A-Z a-z 0-9 . _ -, up to 64).") var id: String
    @Argument(help: "Image config (config.v1.json) whose lowers the disk reads.") var imageConfig: String
    @Option(name: .long, help: "Frontend: vhost-user-blk or nbd.") var frontend = "vhost-user-blk"
    @Option(name: .customLong("frontend-socket"), help: "Unix socket the frontend listens on.") var frontendSocket: String
    @Option(name: .long, help: "Writable: folder (must not exist) for the disk's new upper. Without it the disk is read-only.") var upper: String?
    @Flag(name: .long, help: "Open the upper an earlier add made in --upper instead of making a new one.") var reopen = false
    @Option(name: .long, help: "vhost-user-blk request queues (1 to 64).") var queues: Int?
    @Option(name: .long, help: "vhost-user-blk serial (up to 20 bytes).") var serial: String?

    func run() throws {
        try runReportingErrors {
            guard let kind = DiskSpec.Frontend.Kind(rawValue: frontend) else {
                throw CLIError("--frontend: '\(frontend)' is not vhost-user-blk or nbd")
            }
            let spec = DiskSpec(id: id, config: absolute(imageConfig), mode: upper == nil ? .readOnly : .writable,
                                frontend: .init(type: kind, socket: absolute(frontendSocket), queues: queues, serial: serial),
                                upper: upper.map(absolute), reopen: reopen ? true : nil)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            try daemon.call("POST", "/v1/disks", body: Array(try encoder.encode(spec)))
        }
    }
}

struct DiskRemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a disk (its writes are flushed first).")
    @OptionGroup var daemon: DaemonSocketOption
    @Argument(help: "Disk id.") var id: String
    func run() throws { try runReportingErrors { try daemon.call("DELETE", "/v1/disks/\(id)") } }
}

struct DiskListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the disks (JSON).")
    @OptionGroup var daemon: DaemonSocketOption
    func run() throws { try runReportingErrors { try daemon.call("GET", "/v1/disks") } }
}

struct DiskStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "A disk's I/O counters (JSON).")
    @OptionGroup var daemon: DaemonSocketOption
    @Argument(help: "Disk id.") var id: String
    func run() throws { try runReportingErrors { try daemon.call("GET", "/v1/disks/\(id)/stats") } }
}
