import ArgumentParser
import Glibc
import Image
import Logging
import MetricsExporter
import TCMU
import Threading

/// obd-tcmu: the TCMU backstore service, a drop-in for overlaybd-tcmu.
@main
struct OBDTCMU: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "obd-tcmu",
        abstract: "Serve obd/overlaybd images as TCMU (LIO) block devices: handler subtype 'overlaybd'.",
        discussion: """
            Devices are created through configfs as for overlaybd-tcmu: \
            dev_config=overlaybd/<config.v1.json>[;<dev_id>] and enable. obd-tcmu logs \
            "obd-tcmu: ready" and notifies systemd (Type=notify) once it takes devices. \
            SIGTERM or SIGINT stops every device (flushing its writes) and exits.
            """)

    @Argument(help: "Global overlaybd.json (overlaybd-tcmu takes it as its first argument).") var configPath: String?
    @Option(name: .customLong("config"), help: "Global overlaybd.json (same as the argument).") var configOption: String?
    @Option(name: .long, help: "I/O worker threads shared by all devices.") var workers = 32
    @Option(name: .long, help: "Log level: trace, debug, info, warning, error.") var logLevel = "info"

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "obd-tcmu")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let path = configOption ?? configPath
        let global: GlobalConfig
        do {
            global = try GlobalConfig.load(path: path)
        } catch {
            logger.error("\(error)")
            throw ExitCode.failure
        }
        var metrics: MetricsEndpoint?
        if global.exporterConfig.enable {
            do {
                let e = global.exporterConfig
                metrics = try MetricsEndpoint(address: e.address, port: e.port, uriPrefix: e.uriPrefix)
                logger.info("obd-tcmu: metrics on http://\(e.address):\(metrics!.port)\(e.uriPrefix)")
            } catch {
                logger.error("\(error)")
                throw ExitCode.failure
            }
        }
        defer { metrics?.stop() }
        let log = logger
        let service = TCMUService(global: global, workers: workers) { log.info("\($0)") }
        // Taken by this thread; the threads started from here on inherit the mask.
        let signals = TerminationSignals.block()
        do {
            try service.start()
        } catch {
            logger.error("\(error)")
            throw ExitCode.failure
        }
        do {
            try NamedThread.detach(name: "obd-tcmu-netlink") { service.run() }
        } catch {
            logger.error("\(error)")
            throw ExitCode.failure
        }
        logger.info("obd-tcmu: ready (global config: \(path ?? (access(GlobalConfig.defaultPath, F_OK) == 0 ? GlobalConfig.defaultPath : "built-in defaults")))")
        SystemdNotify.notify("READY=1\nSTATUS=taking devices")
        let sig = signals.wait()
        SystemdNotify.notify("STOPPING=1")
        logger.info("obd-tcmu: signal \(sig): stopping \(service.deviceCount) device(s)")
        service.shutdown()
        logger.info("obd-tcmu: stopped")
    }
}
