import ArgumentParser
import BlockIO
import Glibc
import Threading
import Image
import VhostUser

struct ServeVhostUserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-user",
        abstract: "Serve an image as a vhost-user-blk back-end on a unix socket, for QEMU and other VMMs.",
        discussion: """
            The VMM connects to --socket (QEMU: -chardev socket,id=c,path=PATH -device vhost-user-blk-pci,chardev=c); \
            guest memory must be shared (-object memory-backend-memfd,...,share=on). One front-end is served at a \
            time; after it disconnects the next one (or the same VMM reconnecting) gets the disk. The image is \
            writable when its config has an upper layer (unless --read-only). Prints one line to stderr when it \
            is ready. SIGTERM or SIGINT flushes the image and exits.
            """)

    @Argument(help: "Image config (config.v1.json).") var imageConfig: String
    @Option(name: .long, help: "Unix socket path to listen on.") var socket: String
    @Option(name: .long, help: "Global overlaybd.json (default: /etc/overlaybd/overlaybd.json if it exists).") var config: String?
    @Flag(name: .long, help: "Serve read-only even if the image has an upper layer.") var readOnly = false
    @Option(name: .long, help: "Request queues offered (each served by its own thread).") var queues = 1
    @Option(name: .long, help: "Serial number the guest reads (GET_ID, up to 20 bytes).") var serial = "obd"

    func run() throws {
        try runReportingErrors {
            guard (1...64).contains(queues) else { throw CLIError("--queues: \(queues) is not between 1 and 64") }
            let global = try GlobalConfig.load(path: config)
            let image = try Image.open(configPath: imageConfig, global: global, writable: !readOnly) { writeStandardError("obd: " + $0 + "\n") }
            // The frontend's reads run under the image's token: a signal cancels those blocked on the registry.
            let disk: any BlockFile = CancellableFile(image.stack, token: image.cancellation)
            // Taken by this thread; the threads started from here on inherit the mask.
            let signals = TerminationSignals.block()
            let ro = readOnly || !disk.isWritable
            let server = try VhostUserBlkServer(file: disk, socketPath: socket, readOnly: ro, queues: queues, serial: serial) {
                writeStandardError("obd: " + $0 + "\n")
            }
            try server.start()
            writeStandardError("obd: serving \(imageConfig) over vhost-user-blk on \(socket) (\(disk.size) bytes, \(queues) queues, \(ro ? "read-only" : "writable"))\n")
            let sig = signals.wait()
            image.cancelFetches()
            server.stop()
            do { try disk.flush() } catch { writeStandardError("obd: error: flush on exit failed: \(error)\n"); throw ExitCode.failure }
            image.close()
            writeStandardError("obd: stopped (signal \(sig))\n")
        }
    }
}
