/// The host daemon: one `DiskRegistry` (one worker pool and one set of shared lowers
/// for every disk) and the control API on a unix socket.
public final class HostDaemon: Sendable {
    public let registry: DiskRegistry
    public let control: ControlServer

    /// Restores the disks of the state file (if any), then listens on `controlSocket`.
    /// The disks that could not be restored are in `restoreFailures` (and the log).
    public init(controlSocket: String, options: DiskRegistry.Options, workers: Int = 16,
                log: @escaping @Sendable (String) -> Void) throws(DaemonError) {
        let registry = DiskRegistry(options: options, workers: workers, log: log)
        do {
            restoreFailures = try registry.restore()
        } catch {
            registry.shutdown()
            throw error
        }
        do {
            control = try ControlServer(socketPath: controlSocket, api: ControlAPI(registry: registry))
        } catch {
            registry.shutdown()
            throw error
        }
        self.registry = registry
    }

    /// Disks of the state file that could not be served again.
    public let restoreFailures: [(id: String, error: DaemonError)]

    /// Stops the control API, then every disk, each flushed. The state file stays, so the
    /// next start serves the same disks.
    public func shutdown() {
        control.stop()
        registry.shutdown()
    }
}
