import Glibc
import Synchronization

/// What a cached blob reports to its cache: that it was used (for LRU order) and how
/// many bytes it holds. The cache's totals are atomics and its eviction runs in the
/// background, so a cache hit touches no lock shared with other blobs.
protocol CacheAccounting: AnyObject, Sendable {
    /// The blob was read (cheap enough for every read: one relaxed load per millisecond).
    func used()
    /// The blob now holds `bytes` more cached bytes (a refill).
    func grew(by bytes: UInt64)
    /// The blob holds no cached bytes any more (eviction, invalidation).
    func dropped()
    /// After a refill, with no lock of the blob held: above the capacity itself, evicts
    /// other blobs before the reader goes on (the hard limit).
    func settle()
}

/// The cache's total usage and high-water marks, shared by every entry.
final class CacheUsage: Sendable {
    let total = Atomic<UInt64>(0)
    /// Above this, eviction is scheduled in the background.
    let highWater: UInt64
    /// Above this, the reader whose refill crossed it evicts before it goes on.
    let capacity: UInt64
    private let evictionQueued = Atomic<Bool>(false)

    init(capacity: UInt64) {
        self.capacity = capacity
        highWater = capacity / 10 * 9
    }

    /// Adds `bytes`; true when usage is above the high-water mark and no eviction is
    /// queued yet (the caller queues one, and `evictionDone` ends it).
    func add(_ bytes: UInt64) -> Bool {
        let now = total.add(bytes, ordering: .relaxed).newValue
        return now > highWater && !evictionQueued.exchange(true, ordering: .acquiring)
    }

    var overCapacity: Bool { total.load(ordering: .relaxed) > capacity }

    func subtract(_ bytes: UInt64) {
        guard bytes > 0 else { return }
        total.subtract(bytes, ordering: .relaxed)
    }

    /// The background eviction ended; the next crossing schedules another.
    func evictionDone() { evictionQueued.store(false, ordering: .releasing) }
}

/// Milliseconds on the coarse monotonic clock: LRU stamps (no system call; the vDSO
/// reads it).
@inline(__always)
func coarseMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}
