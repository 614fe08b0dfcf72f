import BlockIO
import Glibc
import Synchronization
import Threading

/// A persistent, size-limited cache of remote blob ranges on local disk, shared by all
/// images of a host and keyed by blob digest. Each blob has a sparse data file and a
/// presence map (one bit per refill unit): a bit is written only after the unit's data
/// is on disk (fdatasync), so after a crash at any moment the cache never serves bytes
/// that were not written completely; units whose bits were not yet persisted are
/// simply fetched again.
public final class BlockCache: @unchecked Sendable {
    public let directory: String
    public let capacity: UInt64
    public let refillSize: Int
    /// Blobs by key: taken to open a blob and to pick eviction victims, never on a read.
    private let files = Mutex<[String: Entry]>([:])
    let totals: CacheUsage

    /// One blob's accounting: its cached bytes and LRU stamp as atomics of its own.
    final class Entry: CacheAccounting, @unchecked Sendable {
        let key: String
        /// The open view; read and written only under `files`' lock.
        weak var file: CachedFile?
        let bytes = Atomic<UInt64>(0)
        let lastUse = Atomic<UInt64>(0)
        unowned let cache: BlockCache
        private var totals: CacheUsage { cache.totals }

        init(key: String, cache: BlockCache) {
            self.key = key
            self.cache = cache
        }

        func used() {
            let now = coarseMilliseconds()
            if lastUse.load(ordering: .relaxed) != now { lastUse.store(now, ordering: .relaxed) }
        }

        func grew(by n: UInt64) {
            bytes.add(n, ordering: .relaxed)
            if totals.add(n) { cache.scheduleEviction() }
        }

        func dropped() {
            totals.subtract(bytes.exchange(0, ordering: .relaxed))
        }

        func settle() {
            if totals.overCapacity { cache.evictIfNeeded(except: self) }
        }

        /// Sets the bytes found at open (a map from an earlier run).
        func reset(to n: UInt64) {
            let old = bytes.exchange(n, ordering: .relaxed)
            if n > old {
                if totals.add(n - old) { cache.scheduleEviction() }
            } else {
                totals.subtract(old - n)
            }
        }
    }

    private let lockFD: Int32
    /// Runs readahead fetches and presence-map syncs off the readers' threads.
    let background = WorkerPool(threads: 4, capacity: 256, name: "obd-cache")
    /// Upstream fetches that background work (trace prefetch, readahead) may have in
    /// flight at once, host-wide: half of a registry host's 16 connections, so the other
    /// half is always free for foreground reads.
    public static let backgroundFetchShare = 8
    let backgroundFetches = InFlightLimit(limit: BlockCache.backgroundFetchShare)
    /// Bytes fetched ahead of a sequential reader (0 turns readahead off).
    public var readahead: UInt64 = 64 << 20

    /// - Parameters:
    ///   - capacity: bytes of cached data to keep (the high-water mark is 90% of it).
    ///   - refillSize: unit of fetching and of presence tracking (power of two, >= 4096).
    public init(directory: String, capacity: UInt64, refillSize: Int = 256 * 1024) throws {
        guard refillSize >= 4096, refillSize & (refillSize - 1) == 0 else {
            throw BlockIOError.unsupported(name: directory, operation: "refillSize \(refillSize) (must be a power of two >= 4096)")
        }
        self.directory = directory
        self.capacity = capacity
        self.refillSize = refillSize
        totals = CacheUsage(capacity: capacity)
        mkdir(directory, 0o755)
        guard access(directory, W_OK) == 0 else { throw BlockIOError.open(path: directory, errno: errno) }
        // One process per cache folder: another one's evictions and resets would punch out
        // data this one trusts in memory. The lock goes with the process (also on a crash).
        lockFD = Glibc.open(directory + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else { throw BlockIOError.open(path: directory + "/.lock", errno: errno) }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            close(lockFD)
            throw BlockCacheError.inUse(directory: directory, errno: e)
        }
        // Re-register blobs cached by earlier runs (usage from their presence maps).
        if let d = opendir(directory) {
            defer { closedir(d) }
            while let e = readdir(d) {
                let n = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                guard n.hasSuffix(".map") else { continue }
                let key = String(n.dropLast(4))
                let entry = Entry(key: key, cache: self)
                entry.reset(to: PresenceMap.presentBytes(path: directory + "/" + n, unit: refillSize))
                files.withLock { $0[key] = entry }
            }
        }
    }

    deinit { close(lockFD) }

    private static let shared = Mutex<[String: BlockCache]>([:])

    /// The process's cache for `directory` (made, with its missing parents, on first use).
    /// Every user in a process goes through here: the folder lock admits one cache
    /// object per folder, so a second one in the same process would be refused.
    public static func shared(directory: String, capacity: UInt64, refillSize: Int) throws -> BlockCache {
        try shared.withLock { d in
            if let existing = d[directory] { return existing }
            makeDirectories(directory)
            let made = try BlockCache(directory: directory, capacity: capacity, refillSize: refillSize)
            d[directory] = made
            return made
        }
    }

    /// Bytes of cached data.
    public var usage: UInt64 { totals.total.load(ordering: .relaxed) }

    /// Opens the cached view of `upstream`, keyed by `key` (the blob digest). Images that
    /// share a blob share one open view (one presence map, one eviction lock), so one of
    /// them evicting can never leave another trusting bits for punched-out data.
    public func open(key: String, upstream: any BlockFile) throws -> CachedFile {
        guard !key.isEmpty, !key.contains("/"), key != ".", key != ".." else {
            throw BlockIOError.unsupported(name: key, operation: "cache key")
        }
        let f: CachedFile = try files.withLock { d in
            let e = d[key] ?? Entry(key: key, cache: self)
            if let live = e.file {
                // Another size for a blob that is open would reset files the live view trusts.
                guard live.size == upstream.size else {
                    throw BlockIOError.unsupported(name: key, operation: "opening with size \(upstream.size) while it is open with size \(live.size)")
                }
                return live
            }
            let made = try CachedFile(cache: self, key: key, upstream: upstream, accounting: e)
            e.file = made
            e.reset(to: made.presentBytes)
            d[key] = e
            return made
        }
        f.accounting.used()
        return f
    }

    func path(_ key: String) -> String { directory + "/" + key }

    /// Called when usage crosses the high-water mark: eviction runs on the background
    /// pool, off every reader's path (the capacity itself is enforced by `settle`).
    func scheduleEviction() {
        if !background.trySubmit({ [self] in
            evictIfNeeded()
            totals.evictionDone()
        }) {
            totals.evictionDone()
        }
    }

    /// Evicts least recently used blobs (whole blobs; never `except`, whose reader is
    /// the caller, nor the most recently used one) while usage is above the high-water
    /// mark. Called with no blob's lock held.
    func evictIfNeeded(except: Entry? = nil) {
        guard usage > totals.highWater else { return }
        let victims: [Entry] = files.withLock { d in
            var total = usage
            var out: [Entry] = []
            let byAge = d.values.sorted { $0.lastUse.load(ordering: .relaxed) < $1.lastUse.load(ordering: .relaxed) }
            for e in byAge.dropLast() where total > totals.highWater && e !== except {
                let b = e.bytes.load(ordering: .relaxed)
                guard b > 0 else { continue }
                total -= min(total, b)
                out.append(e)
            }
            return out
        }
        for e in victims { evict(e) }
    }

    private func evict(_ e: Entry) {
        CacheMetrics.shared.evictions.increment()
        let live = files.withLock { _ in e.file }
        if let live {
            live.dropAll()
        } else {
            unlink(path(e.key))
            unlink(path(e.key) + ".map")
        }
        e.dropped()
    }
}

/// The presence map file: "OBDCMAP1", unit size, blob size, then one bit per unit.
enum PresenceMap {
    static let magic: [UInt8] = Array("OBDCMAP1".utf8)
    static let headerSize = 32

    static func header(unit: Int, size: UInt64) -> [UInt8] {
        var h = magic
        withUnsafeBytes(of: UInt64(unit).littleEndian) { h += $0 }
        withUnsafeBytes(of: size.littleEndian) { h += $0 }
        h += [UInt8](repeating: 0, count: headerSize - h.count)
        return h
    }

    /// Bytes marked present in a map file (0 if it is not a valid map).
    static func presentBytes(path: String, unit: Int) -> UInt64 {
        guard let f = try? LocalFile(path: path, map: false), f.size >= UInt64(headerSize),
              let bytes = try? f.readBytes(at: 0, count: Int(f.size)), Array(bytes[0..<8]) == magic else { return 0 }
        // The blob size in the header gives the last unit its true size.
        let blobSize = bytes[16..<24].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        var total: UInt64 = 0
        for (i, byte) in bytes[headerSize...].enumerated() where byte != 0 {
            for b in 0..<8 where byte & (1 << b) != 0 {
                let start = UInt64(i * 8 + b) * UInt64(unit)
                if start < blobSize { total += min(UInt64(unit), blobSize - start) }
            }
        }
        return total
    }
}

/// Errors of the cache folder itself.
public enum BlockCacheError: Error, CustomStringConvertible {
    /// Another process holds the folder.
    case inUse(directory: String, errno: Int32)

    public var description: String {
        switch self {
        case let .inUse(d, e):
            return "cache folder \(d) is in use by another process (\(e == EWOULDBLOCK ? "locked" : BlockIOError.text(e)))"
        }
    }
}
