import Synchronization

/// A small in-memory cache of decompressed spans, so a second read of a span does not
/// inflate it again. Sharded by span (one short lock per shard, none global); least
/// recently used spans leave a shard first. One cache can serve several `GzipFile`s.
public final class GzipSpanCache: Sendable {
    struct Key: Hashable {
        var file: UInt64
        var span: Int
    }

    struct Entry {
        var key: Key
        var bytes: [UInt8]
        var lastUse: UInt64
    }

    struct Shard {
        var entries: [Entry] = []
        var bytes = 0
        var tick: UInt64 = 0
    }

    final class ShardBox: Sendable {
        let state = Mutex(Shard())
    }

    public let capacity: Int
    let shardCapacity: Int
    let shards: [ShardBox]
    let hitCount = Atomic<UInt64>(0)
    let missCount = Atomic<UInt64>(0)
    static let nextFile = Atomic<UInt64>(1)

    /// - Parameters:
    ///   - capacity: bytes of decompressed data kept in all (0 disables the cache).
    ///   - shards: independent parts, each with `capacity / shards` bytes.
    public init(capacity: Int = 32 << 20, shards: Int = 8) {
        self.capacity = max(0, capacity)
        let n = max(1, shards)
        shardCapacity = self.capacity / n
        self.shards = (0..<n).map { _ in ShardBox() }
    }

    public var hits: UInt64 { hitCount.load(ordering: .relaxed) }
    public var misses: UInt64 { missCount.load(ordering: .relaxed) }

    static func newFileID() -> UInt64 { nextFile.add(1, ordering: .relaxed).oldValue }

    func shard(_ key: Key) -> ShardBox {
        let h = UInt64(truncatingIfNeeded: key.span) &+ key.file &* 0x9E37_79B9
        return shards[Int(h % UInt64(shards.count))]
    }

    /// Whether a span of `length` bytes can be kept.
    func admits(_ length: Int) -> Bool { length > 0 && length <= shardCapacity }

    func get(_ key: Key) -> [UInt8]? {
        let found: [UInt8]? = shard(key).state.withLock { s in
            guard let i = s.entries.firstIndex(where: { $0.key == key }) else { return nil }
            s.tick += 1
            s.entries[i].lastUse = s.tick
            return s.entries[i].bytes
        }
        if found == nil { missCount.add(1, ordering: .relaxed) } else { hitCount.add(1, ordering: .relaxed) }
        return found
    }

    func put(_ key: Key, _ bytes: [UInt8]) {
        guard admits(bytes.count) else { return }
        shard(key).state.withLock { s in
            if s.entries.contains(where: { $0.key == key }) { return }
            while s.bytes + bytes.count > shardCapacity, let victim = s.entries.indices.min(by: { s.entries[$0].lastUse < s.entries[$1].lastUse }) {
                s.bytes -= s.entries[victim].bytes.count
                s.entries.remove(at: victim)
            }
            s.tick += 1
            s.entries.append(Entry(key: key, bytes: bytes, lastUse: s.tick))
            s.bytes += bytes.count
        }
    }

    /// Bytes held now.
    public var usedBytes: Int { shards.reduce(0) { acc, b in acc + b.state.withLock { $0.bytes } } }
}
