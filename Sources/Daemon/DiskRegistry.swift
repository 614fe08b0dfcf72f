import BlockIO
import Glibc
import Image
import LSMT
import Synchronization
import Threading

/// The disks of one daemon, by id.
///
/// An add reserves its id and socket path under the table's lock (a moment), then,
/// without any global lock, loads the config, gets the lowers from `LowerCache` (opened
/// once per identity; an add over lowers already open neither reopens nor re-reads
/// them), makes the disk's own sparse upper in the folder it names and starts its
/// frontend. Adds of different disks run in parallel. Every add and remove rewrites the
/// state file, if there is one.
public final class DiskRegistry: Sendable {
    /// How the registry opens and serves disks.
    public struct Options: Sendable {
        /// The global config (cache, credentials, I/O engine) every image is opened with.
        public var global: GlobalConfig
        /// Where the list of disks is kept (nil: nowhere).
        public var statePath: String?
        /// Longest wait for another add opening the same lowers, in seconds.
        public var openTimeout: Double
        /// Longest wait for an NBD disk's requests when it is removed, in seconds.
        public var stopTimeout: Double
        /// Wraps each disk's file before it is served (per-disk metrics), given the id.
        public var decorate: (@Sendable (any BlockFile, String) -> any BlockFile)?

        public init(global: GlobalConfig = GlobalConfig(), statePath: String? = nil, openTimeout: Double = 600,
                    stopTimeout: Double = 30, decorate: (@Sendable (any BlockFile, String) -> any BlockFile)? = nil) {
            self.global = global
            self.statePath = statePath
            self.openTimeout = openTimeout
            self.stopTimeout = stopTimeout
            self.decorate = decorate
        }
    }

    private struct Table {
        var disks: [String: Disk] = [:]
        /// Ids being added (not yet in `disks`).
        var adding: Set<String> = []
        /// Socket path (normalized) -> id of the disk that has it or is adding it.
        var sockets: [String: String] = [:]
        var sequence = 0
        var stopping = false
    }

    public let options: Options
    /// The lowers open now, shared by the disks.
    public let lowers = LowerCache()
    /// The I/O workers of every NBD disk.
    public let pool: WorkerPool
    private let table = Mutex(Table())
    /// Serializes state-file writes; each writes the table as it is then.
    private let stateLock = Mutex(())
    /// While true, adds do not write the state file (restore writes it once at the end).
    private let restoring = Atomic<Bool>(false)
    private let log: @Sendable (String) -> Void

    /// - Parameters:
    ///   - workers: I/O threads shared by the NBD disks.
    ///   - log: receives one line per event (adds, removes, frontend messages).
    public init(options: Options, workers: Int = 16, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.options = options
        pool = WorkerPool(threads: workers, capacity: 1024, name: "obd-daemon-io")
        self.log = log
    }

    /// Number of disks served now.
    public var count: Int { table.withLock { $0.disks.count } }

    /// The disks, in the order they were added.
    public func list() -> [DiskInfo] {
        table.withLock { Array($0.disks.values) }.sorted { $0.sequence < $1.sequence }.map(DiskInfo.init)
    }

    /// One disk's description.
    public func info(id: String) throws(DaemonError) -> DiskInfo {
        guard let d = table.withLock({ $0.disks[id] }) else { throw .noSuchDisk(id) }
        return DiskInfo(d)
    }

    /// One disk's counters.
    public func stats(id: String) throws(DaemonError) -> DiskStats {
        guard let d = table.withLock({ $0.disks[id] }) else { throw .noSuchDisk(id) }
        var s = d.file.snapshot
        s.sessions = d.frontend.sessions
        s.lowersSharedBy = lowers.users[d.lowers.key] ?? 0
        return s
    }

    /// Adds and starts the disk `spec` describes; returns when its frontend listens.
    @discardableResult
    public func add(_ spec: DiskSpec) throws(DaemonError) -> DiskInfo {
        try add(spec, sequence: nil)
    }

    /// `sequence`: the disk's place in the list (restore keeps the state file's order).
    private func add(_ spec: DiskSpec, sequence: Int?) throws(DaemonError) -> DiskInfo {
        try spec.validate()
        let socketKey = DiskRegistry.normalize(spec.frontend.socket)
        try table.withLock { (t: inout Table) throws(DaemonError) in
            guard !t.stopping else { throw .shuttingDown }
            guard t.disks[spec.id] == nil, !t.adding.contains(spec.id) else { throw .duplicateID(spec.id) }
            if let other = t.sockets[socketKey] { throw .socketInUse(path: spec.frontend.socket, disk: other) }
            t.adding.insert(spec.id)
            t.sockets[socketKey] = spec.id
        }
        let disk: Disk
        do {
            disk = try open(spec, sequence: sequence)
        } catch {
            table.withLock { t in
                t.adding.remove(spec.id)
                t.sockets[socketKey] = nil
            }
            throw error
        }
        let accepted = table.withLock { t -> Bool in
            t.adding.remove(spec.id)
            guard !t.stopping else { t.sockets[socketKey] = nil; return false }
            t.disks[spec.id] = disk
            return true
        }
        guard accepted else {
            close(disk)
            throw .shuttingDown
        }
        if !restoring.load(ordering: .relaxed) {
            do { try saveState() } catch {
                // The add is not kept if it cannot be remembered.
                _ = try? remove(id: spec.id, saving: false)
                throw error
            }
        }
        log("disk \(spec.id): added (\(spec.mode.rawValue), \(spec.frontend.type.rawValue) on \(spec.frontend.socket), \(disk.size) bytes)")
        return DiskInfo(disk)
    }

    /// Stops the disk `id` (frontend first), flushes it and lets go of its lowers.
    public func remove(id: String) throws(DaemonError) {
        try remove(id: id, saving: true)
    }

    private func remove(id: String, saving: Bool) throws(DaemonError) {
        let disk = try table.withLock { (t: inout Table) throws(DaemonError) -> Disk in
            guard let d = t.disks.removeValue(forKey: id) else { throw .noSuchDisk(id) }
            return d
        }
        let flushError = close(disk)
        table.withLock { $0.sockets[DiskRegistry.normalize(disk.spec.frontend.socket)] = nil }
        if saving {
            do { try saveState() } catch { log("disk \(id): removed, but \(error)") }
        }
        if let flushError {
            throw .upperFailed(path: disk.spec.upper ?? disk.spec.config, detail: "flush on removal failed: \(flushError)")
        }
        log("disk \(id): removed")
    }

    /// Stops every disk and flushes it; the state file is left as it is, so a restart
    /// serves the same disks. Later adds are refused.
    public func shutdown() {
        let disks = table.withLock { t -> [Disk] in
            t.stopping = true
            let d = Array(t.disks.values)
            t.disks = [:]
            t.sockets = [:]
            return d
        }
        // Each disk stops on its own thread: one slow flush holds up no other.
        let list = disks
        do {
            try parallelForEach(count: list.count, threads: 8, name: "obd-daemon-stop") { [self] i in
                if let e = close(list[i]) { log("disk \(list[i].spec.id): flush on shutdown failed: \(e)") }
            }
        } catch {
            for d in list { _ = close(d) }
        }
        pool.shutdown()
        log("stopped \(list.count) disk(s)")
    }

    /// Adds every disk the state file lists, each as a reopening of what it was (its
    /// upper is opened, not made). Returns the disks that could not be restored, with
    /// why; they are left out of the rewritten state file.
    @discardableResult
    public func restore() throws(DaemonError) -> [(id: String, error: DaemonError)] {
        guard let path = options.statePath else { return [] }
        let specs = try StateFile.read(path: path)
        restoring.store(true, ordering: .relaxed)
        let failures = Mutex<[(id: String, error: DaemonError)]>([])
        do {
            try parallelForEach(count: specs.count, threads: 8, name: "obd-daemon-restore") { [self] i in
                var s = specs[i]
                if s.mode == .writable { s.reopen = true }
                do throws(DaemonError) {
                    _ = try add(s, sequence: i + 1)
                } catch {
                    log("disk \(s.id): not restored: \(error)")
                    failures.withLock { $0.append((s.id, error)) }
                }
            }
        } catch {
            log("restore: \(error)")
        }
        restoring.store(false, ordering: .relaxed)
        try saveState()
        return failures.withLock { $0 }
    }

    // MARK: opening

    private func open(_ spec: DiskSpec, sequence: Int?) throws(DaemonError) -> Disk {
        let config = try loadConfig(spec.config)
        let key = LowersKey(config: config, globalPath: options.global.path)
        let shared = try lowers.acquire(key, timeout: options.openTimeout) { () throws(DaemonError) -> SharedLowers in
            do {
                let image = try Image(config: config, global: options.global, writable: false) { [log] in log("image \(spec.config): \($0)") }
                return SharedLowers(key: key, image: image, origin: spec.config)
            } catch {
                throw .imageFailed(path: spec.config, detail: DiskRegistry.strip("\(error)", spec.config))
            }
        }
        var upper: WritableLayer?
        var madeUpper: String?
        do {
            let base: any BlockFile
            if spec.mode == .writable, let dir = spec.upper {
                let (layer, made) = try makeOrOpenUpper(dir: dir, reopen: spec.reopen ?? false, size: shared.size)
                upper = layer
                madeUpper = made ? dir : nil
                base = UpperOverlay(upper: layer, base: shared.file, name: spec.id)
            } else {
                base = shared.file
            }
            let cancellation = CancellationToken()
            let file = CountingFile(CancellableFile(options.decorate?(base, spec.id) ?? base, token: cancellation))
            let frontend = try DiskFrontend.start(spec.frontend, id: spec.id, file: file, readOnly: spec.mode == .readOnly,
                                                  remoteReads: shared.hasRemoteLowers, pool: pool) { [log] in log("disk \(spec.id): \($0)") }
            let place = table.withLock { t -> Int in
                t.sequence = max(t.sequence, sequence ?? 0) + (sequence == nil ? 1 : 0)
                return sequence ?? t.sequence
            }
            return Disk(spec: spec, lowers: shared, upper: upper, file: file, frontend: frontend, sequence: place,
                        cancellation: cancellation)
        } catch {
            if let made = madeUpper {
                unlink(made + "/" + DiskSpec.upperDataName)
                rmdir(made)
            }
            lowers.release(key)
            throw error
        }
    }

    /// Stops `disk` and lets go of its lowers; returns a flush error, if any.
    @discardableResult
    private func close(_ disk: Disk) -> (any Error)? {
        var failure: (any Error)?
        do { try disk.stop(timeout: options.stopTimeout) } catch { failure = error }
        lowers.release(disk.lowers.key)
        return failure
    }

    private func loadConfig(_ path: String) throws(DaemonError) -> ImageConfig {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw .configNotFound(path: path, detail: "cannot read the image config: \(BlockIOError.text(errno))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .configNotFound(path: path, detail: "the image config is not a regular file") }
        let config: ImageConfig
        do { config = try ImageConfig.load(path: path) } catch {
            throw .imageFailed(path: path, detail: DiskRegistry.strip("\(error)", path))
        }
        if config.hasUpper {
            throw .imageFailed(path: path, detail: "the config has an 'upper'; the daemon makes each writable disk's upper itself (name its folder in the request's 'upper')")
        }
        return config
    }

    /// A new sparse upper in the new folder `dir`, or with `reopen` the one a daemon made there.
    private func makeOrOpenUpper(dir: String, reopen: Bool, size: UInt64) throws(DaemonError) -> (WritableLayer, made: Bool) {
        let data = dir + "/" + DiskSpec.upperDataName
        if reopen {
            let layer: WritableLayer
            do { layer = try WritableLayer.open(dataPath: data, indexPath: nil, writable: true) } catch {
                throw .upperFailed(path: dir, detail: "cannot reopen: \(DiskRegistry.strip("\(error)", data))")
            }
            guard layer.mode == .sparse, layer.virtualSize == size else {
                throw .upperFailed(path: dir, detail: "\(data) is not a sparse upper of \(size) bytes (a \(layer.mode) layer of \(layer.virtualSize))")
            }
            return (layer, false)
        }
        guard mkdir(dir, 0o755) == 0 else {
            let e = errno
            if e == EEXIST { throw .upperExists(path: dir) }
            throw .upperFailed(path: dir, detail: "cannot make the folder: \(BlockIOError.text(e))")
        }
        do {
            let layer = try WritableLayer.create(dataPath: data, indexPath: nil, virtualSize: size, sparse: true)
            return (layer, true)
        } catch {
            unlink(data)
            rmdir(dir)
            throw .upperFailed(path: dir, detail: "cannot make the upper: \(error)")
        }
    }

    /// Writes the state file (if any) from the table as it is now.
    private func saveState() throws(DaemonError) {
        guard let path = options.statePath else { return }
        try stateLock.withLock { (_: inout ()) throws(DaemonError) in
            let specs = table.withLock { Array($0.disks.values) }.sorted { $0.sequence < $1.sequence }.map { d -> DiskSpec in
                var s = d.spec
                s.reopen = nil
                return s
            }
            try StateFile.write(specs, path: path)
        }
    }

    /// `path` with repeated slashes, `.` and `..` folded, so two spellings of one socket match.
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for p in path.split(separator: "/", omittingEmptySubsequences: true) {
            if p == "." { continue }
            if p == ".." { _ = parts.popLast(); continue }
            parts.append(p)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func strip(_ text: String, _ path: String) -> String {
        text.hasPrefix(path + ": ") ? String(text.dropFirst(path.count + 2)) : text
    }
}
