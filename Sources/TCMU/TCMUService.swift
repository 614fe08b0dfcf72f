import BlockIO
import FoundationEssentials
import Glibc
import Image
import Synchronization
import Threading

/// obd-tcmu's core: listens for TCMU devices whose handler is `overlaybd`, opens the
/// image named in each device's config string, serves it, and answers the kernel.
/// A device that fails to open fails its `enable` and gets a result file saying why;
/// the others keep working.
public final class TCMUService: @unchecked Sendable {
    /// The handler subtype in `dev_config=<subtype>/<config path>[;<dev_id>]`.
    public static let subtype = "overlaybd"

    let global: GlobalConfig
    let pool: WorkerPool
    let log: @Sendable (String) -> Void
    private let devices = Mutex<[String: TCMUDevice]>([:])
    private var netlink: TCMUNetlink?

    public init(global: GlobalConfig, workers: Int = 32, log: @escaping @Sendable (String) -> Void) {
        self.global = global
        pool = WorkerPool(threads: workers, capacity: 4096, name: "obd-tcmu")
        self.log = log
    }

    /// What a TCMU device's config string names.
    public struct DeviceConfig: Equatable, Sendable {
        public var hba: String
        public var name: String
        public var subtype: String
        public var configPath: String
        public var deviceID: String?

        public init(hba: String, name: String, subtype: String, configPath: String, deviceID: String?) {
            self.hba = hba
            self.name = name
            self.subtype = subtype
            self.configPath = configPath
            self.deviceID = deviceID
        }
    }

    /// Parses `tcm-user/<hba>/<name>/<subtype>/<config path>[;<dev_id>]`.
    public static func parse(_ cfgstring: String) -> DeviceConfig? {
        let parts = cfgstring.split(separator: "/", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "tcm-user" else { return nil }
        var path = String(parts[4])
        var id: String?
        if let semi = path.lastIndex(of: ";") {
            id = String(path[path.index(after: semi)...])
            path = String(path[..<semi])
        }
        guard !path.isEmpty else { return nil }
        return DeviceConfig(hba: String(parts[1]), name: String(parts[2]), subtype: String(parts[3]), configPath: path, deviceID: id)
    }

    /// The module parameters of target_core_user that hold back and reset netlink events.
    static let moduleParameters = "/sys/module/target_core_user/parameters"

    /// Connects to the kernel and re-attaches devices that already exist. Call `run` next.
    ///
    /// As overlaybd (libtcmu) does: new netlink events are blocked while devices are
    /// re-attached, and events a dead process never answered are failed (an `enable`
    /// that waited for it returns EINTR instead of hanging); then events flow again.
    public func start() throws {
        let blocked = setModuleParameter("block_netlink", "1")
        if blocked { _ = setModuleParameter("reset_netlink", "1") }
        defer { if blocked { _ = setModuleParameter("block_netlink", "0") } }
        let nl = try TCMUNetlink()
        if !nl.requestReplies() {
            log("tcmu: the kernel does not wait for replies: 'enable' will not report open failures")
        }
        netlink = nl
        reattachExisting()
    }

    private func setModuleParameter(_ name: String, _ value: String) -> Bool {
        do {
            try writeControlFile("\(Self.moduleParameters)/\(name)", value)
            return true
        } catch {
            log("tcmu: \(error) (netlink events are not held back during re-attach)")
            return false
        }
    }

    /// Serves netlink events until the socket fails.
    public func run() {
        netlink?.run { [self] event in
            // Each event is handled on its own thread: opening an image may take a while
            // and must not hold up other devices.
            let box = EventBox(service: self, event: event)
            do {
                try NamedThread.detach(name: "obd-tcmu-event") { box.service.handle(box.event) }
            } catch {
                // Handled inline rather than dropped: the kernel waits for the reply.
                log("tcmu: \(error); handling the event on the netlink thread")
                handle(event)
            }
        }
    }

    private final class EventBox: Sendable {
        let service: TCMUService
        let event: TCMUNetlink.Event
        init(service: TCMUService, event: TCMUNetlink.Event) { self.service = service; self.event = event }
    }

    func handle(_ event: TCMUNetlink.Event) {
        switch event.command {
        case TCMUNetlink.cmdAddedDevice:
            let status = add(cfgstring: event.device, minor: event.minor)
            netlink?.reply(to: event, status: status)
        case TCMUNetlink.cmdRemovedDevice:
            remove(cfgstring: event.device)
            netlink?.reply(to: event, status: 0)
        case TCMUNetlink.cmdReconfigDevice:
            // Resizing or reconfiguring a live device is not supported (as in overlaybd).
            netlink?.reply(to: event, status: -EOPNOTSUPP)
        default:
            break
        }
    }

    /// Opens and starts a device; returns 0 or a negative errno for the kernel.
    /// With `reattach`, the device was served by an earlier process (`reattachExisting`):
    /// its ring is taken over through configfs, and if its image no longer opens, the
    /// commands left in the ring are failed rather than left waiting.
    @discardableResult
    func add(cfgstring: String, minor: UInt32, reattach: Bool = false) -> Int32 {
        guard let cfg = Self.parse(cfgstring), cfg.subtype == Self.subtype else {
            return -ENOENT   // not ours (another handler's device)
        }
        let control: (any RingControl)? = reattach ? ConfigfsRingControl(hba: cfg.hba, name: cfg.name) : nil
        var imageConfig: ImageConfig?
        do {
            let config = try ImageConfig.load(path: cfg.configPath)
            imageConfig = config
            let image = try Image(config: config, global: global, writable: true, log: log)
            let serial = cfg.deviceID.map { "obd-\($0)" } ?? "obd-\(cfg.hba)-\(cfg.name)"
            let file: any BlockFile = global.exporterConfig.enable ? MeteredFile(image.stack, device: cfg.name) : image.stack
            let disk = SCSIDisk(file: file, readOnly: !image.stack.isWritable, serial: serial)
            let device = try TCMUDevice(name: cfgstring, minor: minor, image: image, disk: disk, pool: pool, log: log)
            if reattach {
                let outcome = try device.start(takingOver: control)
                if outcome.reset {
                    log("tcmu: device \(cfg.name): ring reset, \(outcome.abandoned) command(s) left by the previous process handed back to the kernel for a retry")
                } else {
                    log("tcmu: device \(cfg.name): the ring cannot be reset (no configfs control); it was empty, so it is taken as it is")
                }
            } else {
                try device.start()
            }
            devices.withLock { $0[cfgstring] = device }
            try? Image.writeResult(config: config, error: nil)
            log("tcmu: device \(cfg.name) (uio\(minor)) serves \(cfg.configPath): \(image.stack.size) bytes, \(disk.readOnly ? "read-only" : "writable")")
            return 0
        } catch {
            log("tcmu: device \(cfg.name): cannot open \(cfg.configPath): \(error)")
            if let control {
                do {
                    try RingTakeover.failLeftovers(control: control)
                    log("tcmu: device \(cfg.name): commands left in its ring were failed")
                } catch {
                    log("tcmu: device \(cfg.name): cannot fail the commands left in its ring: \(error)")
                }
            }
            if let imageConfig {
                try? Image.writeResult(config: imageConfig, error: error)
            } else if let c = try? ImageConfigProbe.resultPath(cfg.configPath) {
                try? writeFailure(path: c, text: "\(error)")
            }
            return -EIO
        }
    }

    private func writeFailure(path: String, text: String) throws {
        let f = try LocalFile(path: path, mode: .createTruncate)
        try f.writeBytes(Array("failed:\(text)".utf8), at: 0)
    }

    func remove(cfgstring: String) {
        guard let device = devices.withLock({ $0.removeValue(forKey: cfgstring) }) else { return }
        device.stop()
        log("tcmu: device \(device.name) removed")
    }

    /// Serves `tcm-user` UIO devices that exist already (after a restart).
    private func reattachExisting() {
        guard let dir = opendir("/sys/class/uio") else { return }
        defer { closedir(dir) }
        while let e = readdir(dir) {
            let n = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard n.hasPrefix("uio"), let minor = UInt32(n.dropFirst(3)) else { continue }
            let cfg = readSysfs("/sys/class/uio/\(n)/name")
            guard cfg.hasPrefix("tcm-user/"), Self.parse(cfg)?.subtype == Self.subtype else { continue }
            log("tcmu: re-attaching \(cfg) (uio\(minor))")
            add(cfgstring: cfg, minor: minor, reattach: true)
        }
    }

    /// Stops every device (flushing each image).
    public func shutdown() {
        let all = devices.withLock { d -> [TCMUDevice] in
            let v = Array(d.values)
            d.removeAll()
            return v
        }
        for d in all { d.stop() }
    }

    public var deviceCount: Int { devices.withLock { $0.count } }
}

/// Finds a config's result file even when the rest of the config is invalid.
enum ImageConfigProbe {
    private struct ResultOnly: Decodable { var resultFile: String? }

    static func resultPath(_ configPath: String) throws -> String? {
        guard let f = try? LocalFile(path: configPath), f.size < 1 << 20 else { return nil }
        let data = Data(try f.readBytes(at: 0, count: Int(f.size)))
        guard let p = (try? JSONDecoder().decode(ResultOnly.self, from: data))?.resultFile, !p.isEmpty else { return nil }
        return Paths.resolve(p, against: Paths.directory(of: configPath))
    }
}
