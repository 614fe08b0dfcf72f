import ArgumentParser
import BlockIO
import Glibc
import Image
import MetricsExporter
import NBD
import Threading

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve an image as a block device.",
        subcommands: [ServeNBDCommand.self, ServeVhostUserCommand.self])
}

struct ServeNBDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nbd",
        abstract: "Export an image over NBD (fixed newstyle) on a unix socket or TCP, for the kernel NBD client and QEMU.",
        discussion: """
            The image is writable when its config has an upper layer (unless --read-only); writes land \
            in the upper. Prints one line to stderr when it is ready to take connections. SIGTERM or \
            SIGINT flushes the image and exits.
            """)

    @Argument(help: "Image config (config.v1.json).") var imageConfig: String
    @Option(name: .long, help: "Unix socket path to listen on.") var socket: String?
    @Option(name: .long, help: "TCP HOST:PORT to listen on (port 0 picks one).") var listen: String?
    @Option(name: .long, help: "Global overlaybd.json (default: /etc/overlaybd/overlaybd.json if it exists).") var config: String?
    @Option(name: .long, help: "Export name (clients may also ask for the default export \"\").") var name = ""
    @Flag(name: .long, help: "Export read-only even if the image has an upper layer.") var readOnly = false
    @Option(name: .long, help: "I/O worker threads.") var workers = 8

    func run() throws {
        try runReportingErrors {
            guard (socket == nil) != (listen == nil) else { throw CLIError("give exactly one of --socket PATH or --listen HOST:PORT") }
            guard (1...256).contains(workers) else { throw CLIError("--workers: \(workers) is not between 1 and 256") }
            let global = try GlobalConfig.load(path: config)
            var metrics: MetricsEndpoint?
            if global.exporterConfig.enable {
                let e = global.exporterConfig
                metrics = try MetricsEndpoint(address: e.address, port: e.port, uriPrefix: e.uriPrefix)
                writeStandardError("obd: metrics on http://\(e.address):\(metrics!.port)\(e.uriPrefix)\n")
            }
            defer { metrics?.stop() }
            let image = try Image.open(configPath: imageConfig, global: global, writable: !readOnly) { writeStandardError("obd: " + $0 + "\n") }
            // The frontend's reads run under the image's token: a signal cancels those blocked on the registry.
            let served = CancellableFile(image.stack, token: image.cancellation)
            let disk: any BlockFile = metrics != nil ? MeteredFile(served, device: name.isEmpty ? imageConfig : name) : served
            // Reads of remote lowers may wait on the network: keep them off the connection thread.
            let export = NBDExport(name: name, file: disk, readOnly: readOnly || !disk.isWritable,
                                   inlineReads: !image.hasRemoteLowers)
            let server = NBDServer(export: export, workers: workers) { writeStandardError("obd: " + $0 + "\n") }
            if let socket {
                try server.listen(unixPath: socket)
            } else if let listen {
                guard let colon = listen.lastIndex(of: ":"), let port = UInt16(listen[listen.index(after: colon)...]) else {
                    throw CLIError("--listen: '\(listen)' is not HOST:PORT")
                }
                var host = String(listen[..<colon])
                if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                try server.listen(host: host, port: port)
            }
            // Taken by this thread; the threads started from here on inherit the mask.
            let signals = TerminationSignals.block()
            try NamedThread.detach(name: "obd-nbd-accept") { server.serve() }
            writeStandardError("obd: serving \(imageConfig) over nbd on \(server.address) (\(disk.size) bytes, \(export.readOnly ? "read-only" : "writable"))\n")
            let sig = signals.wait()
            image.cancelFetches()
            server.stop()
            do { try disk.flush() } catch { writeStandardError("obd: error: flush on exit failed: \(error)\n"); throw ExitCode.failure }
            image.close()
            writeStandardError("obd: stopped (signal \(sig))\n")
        }
    }
}
