import ArgumentParser
import BlockIO
import Daemon
import Glibc
import Image
import MetricsExporter
import Threading

struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Serve many disks from one process; disks are added and removed through a control API on a unix socket.",
        discussion: """
            A disk is an image config plus a frontend (vhost-user-blk socket, or NBD on a unix socket) and a mode \
            (read-only, or writable with a new sparse upper of its own over the shared lowers). The control API is \
            HTTP/1.1 + JSON on --socket (formats/ControlAPI.md); `obd disk` is its client. With --state, the list of \
            disks is kept in that file and served again at the next start. Readiness: the log line \
            "obd: daemon ready ..." and sd_notify READY=1 when NOTIFY_SOCKET is set. SIGTERM or SIGINT stops every \
            disk, flushing its writes.
            """)

    @Option(name: .long, help: "Unix socket of the control API.") var socket: String
    @Option(name: .long, help: "State file: the disks, rewritten on every change and served again at start.") var state: String?
    @Option(name: .long, help: "Prometheus endpoint HOST:PORT (default: the global config's exporterConfig, if enabled).") var metrics: String?
    @Option(name: [.long, .customLong("config")], help: "Global overlaybd.json (default: /etc/overlaybd/overlaybd.json if it exists).") var globalConfig: String?
    @Option(name: .long, help: "I/O worker threads shared by the NBD disks.") var workers = 16

    func run() throws {
        try runReportingErrors { try serve() }
    }

    private func serve() throws {
        guard (1...256).contains(workers) else { throw CLIError("--workers: \(workers) is not between 1 and 256") }
        let global = try GlobalConfig.load(path: globalConfig)
        var endpoint: MetricsEndpoint?
        if let metrics {
            guard let colon = metrics.lastIndex(of: ":"), let port = Int(metrics[metrics.index(after: colon)...]) else {
                throw CLIError("--metrics: '\(metrics)' is not HOST:PORT")
            }
            endpoint = try MetricsEndpoint(address: String(metrics[..<colon]), port: port, uriPrefix: global.exporterConfig.uriPrefix)
        } else if global.exporterConfig.enable {
            let e = global.exporterConfig
            endpoint = try MetricsEndpoint(address: e.address, port: e.port, uriPrefix: e.uriPrefix)
        }
        if let endpoint { writeStandardError("obd: metrics on port \(endpoint.port) at \(endpoint.uriPrefix)\n") }
        defer { endpoint?.stop() }
        // Taken by this thread; the threads started from here on inherit the mask.
        let signals = TerminationSignals.block()
        var options = DiskRegistry.Options(global: global, statePath: state)
        if endpoint != nil {
            options.decorate = { (file: any BlockFile, id: String) -> any BlockFile in MeteredFile(file, device: id) }
        }
        let daemon = try HostDaemon(controlSocket: socket, options: options, workers: workers) { writeStandardError("obd: " + $0 + "\n") }
        let restored = daemon.registry.count
        writeStandardError("obd: daemon ready on \(socket) (\(restored) disk(s) restored, \(daemon.restoreFailures.count) failed; state: \(state ?? "none"))\n")
        SystemdNotify.notify("READY=1\nSTATUS=serving \(restored) disk(s)")
        let sig = signals.wait()
        SystemdNotify.notify("STOPPING=1")
        writeStandardError("obd: signal \(sig): stopping \(daemon.registry.count) disk(s)\n")
        daemon.shutdown()
        writeStandardError("obd: stopped\n")
    }
}
