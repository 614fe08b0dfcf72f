import BlockIO
import Glibc
import Synchronization

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
    private let files = Mutex<[String: Entry]>([:])

    final class Entry: @unchecked Sendable {
        weak var file: CachedFile?
        var bytes: UInt64 = 0
        var lastUse: UInt64 = 0
    }

    private let clock = Atomic<UInt64>(0)
    private let lockFD: Int32
    /// Runs readahead fetches and presence-map syncs off the readers' threads.
    let background = WorkerPool(threads: 4, capacity: 256, name: "obd-cache")
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
                let entry = Entry()
                entry.bytes = PresenceMap.presentBytes(path: directory + "/" + n, unit: refillSize)
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
    public var usage: UInt64 { files.withLock { $0.values.reduce(0) { $0 + $1.bytes } } }

    /// Opens the cached view of `upstream`, keyed by `key` (the blob digest). Images that
    /// share a blob share one open view (one presence map, one eviction lock), so one of
    /// them evicting can never leave another trusting bits for punched-out data.
    public func open(key: String, upstream: any BlockFile) throws -> CachedFile {
        guard !key.isEmpty, !key.contains("/"), key != ".", key != ".." else {
            throw BlockIOError.unsupported(name: key, operation: "cache key")
        }
        let f: CachedFile = try files.withLock { d in
            let e = d[key] ?? Entry()
            if let live = e.file {
                // Another size for a blob that is open would reset files the live view trusts.
                guard live.size == upstream.size else {
                    throw BlockIOError.unsupported(name: key, operation: "opening with size \(upstream.size) while it is open with size \(live.size)")
                }
                return live
            }
            let made = try CachedFile(cache: self, key: key, upstream: upstream)
            e.file = made
            e.bytes = made.presentBytes
            d[key] = e
            return made
        }
        touch(key)
        return f
    }

    func path(_ key: String) -> String { directory + "/" + key }

    func touch(_ key: String) {
        let t = clock.add(1, ordering: .relaxed).newValue
        files.withLock { $0[key]?.lastUse = t }
    }

    /// Records that `key` holds no cached bytes any more.
    func dropped(_ key: String) {
        files.withLock { $0[key]?.bytes = 0 }
    }

    /// Records `delta` new cached bytes for `key`.
    func grew(_ key: String, by delta: UInt64) {
        files.withLock { $0[key]?.bytes += delta }
    }

    /// Evicts least recently used blobs (whole blobs, never `key`) while usage is above
    /// the high-water mark. Called with no cache lock held.
    func evictIfNeeded(except key: String) {
        let victims: [(String, Entry)] = files.withLock { d in
            var total = d.values.reduce(0) { $0 + $1.bytes }
            let high = capacity / 10 * 9
            guard total > high else { return [] }
            var out: [(String, Entry)] = []
            for (k, e) in d.sorted(by: { $0.value.lastUse < $1.value.lastUse }) where k != key && total > high {
                total -= e.bytes
                out.append((k, e))
            }
            return out
        }
        for (k, e) in victims { evict(k, e) }
    }

    private func evict(_ key: String, _ e: Entry) {
        CacheMetrics.shared.evictions.increment()
        if let f = e.file {
            f.dropAll()
        } else {
            unlink(path(key))
            unlink(path(key) + ".map")
        }
        files.withLock { $0[key]?.bytes = 0 }
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
        let bits = bytes[headerSize...].reduce(0) { $0 + $1.nonzeroBitCount }
        return UInt64(bits) * UInt64(unit)
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
