import BlockIO
import Glibc
import Synchronization

/// A remote blob read through the cache: present units come from the local data file,
/// missing ones are fetched from upstream in aligned `refillSize` units (one fetch per
/// unit even when several readers miss it at once), written, then served.
public final class CachedFile: BlockFile, @unchecked Sendable {
    public let key: String
    public let upstream: any BlockFile
    public let size: UInt64
    let unit: Int
    unowned let cache: BlockCache
    private let data: LocalFile
    private let map: LocalFile
    private var bits: [UInt8]
    /// The bits whose data is known durable (fdatasync done): only these reach the map file.
    private var durable: [UInt8]
    private let lock = Mutex(())
    private var fetching: Set<Int> = []
    private var fetchDone = pthread_cond_t()
    private var fetchMutex = pthread_mutex_t()
    private var unsynced: [Int] = []
    private var evictLock = pthread_rwlock_t()
    /// Upstream reads issued (for tests and metrics).
    public let upstreamReads = Atomic<Int>(0)
    /// End of the last read, to spot sequential readers.
    private let lastEnd = Atomic<UInt64>(UInt64.max)
    /// How far readahead has been scheduled.
    private let aheadTo = Atomic<UInt64>(0)
    /// Bytes read back to back so far.
    private let streak = Atomic<UInt64>(0)
    private let syncing = Atomic<Bool>(false)
    private let lastSync = Atomic<Double>(0)

    public let hits = Atomic<Int>(0)

    public var name: String { upstream.name }

    private static let fillBuffers = ThreadLocal { ScratchBuffer(capacity: 4 << 20) }

    init(cache: BlockCache, key: String, upstream: any BlockFile) throws {
        self.cache = cache
        self.key = key
        self.upstream = upstream
        size = upstream.size
        unit = cache.refillSize
        let dataPath = cache.path(key), mapPath = dataPath + ".map"
        data = try LocalFile(path: dataPath, mode: access(dataPath, F_OK) == 0 ? .readWrite : .createExclusive)
        map = try LocalFile(path: mapPath, mode: access(mapPath, F_OK) == 0 ? .readWrite : .createExclusive)
        let units = Int((size + UInt64(unit) - 1) / UInt64(unit))
        let header = PresenceMap.header(unit: unit, size: size)
        var existing: [UInt8] = []
        if map.size == UInt64(PresenceMap.headerSize + (units + 7) / 8) {
            existing = try map.readBytes(at: 0, count: Int(map.size))
        }
        // A map is trusted only with its data file at the full blob size (a truncated or
        // replaced data file would turn "present" units into holes of zeros).
        if existing.count >= PresenceMap.headerSize && Array(existing[0..<PresenceMap.headerSize]) == header && data.size == size {
            bits = Array(existing[PresenceMap.headerSize...])
        } else {
            // New, or written for another unit size / blob size, or damaged: start empty.
            bits = [UInt8](repeating: 0, count: (units + 7) / 8)
            try data.truncate(to: 0)
            try map.truncate(to: 0)
            try map.writeBytes(header + bits, at: 0)
            try map.flush()
        }
        durable = bits
        if data.size != size { try data.truncate(to: size) }

        pthread_mutex_init(&fetchMutex, nil)
        pthread_cond_init(&fetchDone, nil)
        pthread_rwlock_init(&evictLock, nil)
    }

    deinit {
        try? syncMap()
        pthread_mutex_destroy(&fetchMutex)
        pthread_cond_destroy(&fetchDone)
    }

    var presentBytes: UInt64 { lock.withLock { _ in UInt64(bits.reduce(0) { $0 + $1.nonzeroBitCount }) * UInt64(unit) } }

    private func present(_ u: Int) -> Bool { lock.withLock { _ in bits[u >> 3] & (1 << (u & 7)) != 0 } }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        // Eviction takes the write side, so a unit cannot vanish between its presence
        // check and the copy out of the data file.
        pthread_rwlock_rdlock(&evictLock)
        let n: Int
        do {
            n = try readLocked(into: buffer, at: offset)
        } catch {
            pthread_rwlock_unlock(&evictLock)
            throw error
        }
        pthread_rwlock_unlock(&evictLock)
        readAhead(after: offset, count: n)
        cache.evictIfNeeded(except: key)
        return n
    }

    /// A reader that continues where the last read ended gets the next `readahead`
    /// bytes fetched in the background, in 4 MiB runs that overlap on the network.
    private func readAhead(after offset: UInt64, count: Int) {
        let end = offset + UInt64(count)
        let sequential = lastEnd.exchange(end, ordering: .relaxed) == offset
        // A streak of at least 1 MiB of back-to-back reads: a scan, not a few adjacent
        // reads (such as a layer's index at open) that readahead would only waste.
        let run = sequential ? streak.add(UInt64(count), ordering: .relaxed).newValue : 0
        if !sequential { streak.store(UInt64(count), ordering: .relaxed) }
        let window = cache.readahead
        guard sequential, run >= 1 << 20, window > 0, end < size else { return }
        let chunk = UInt64(max(unit, 4 << 20))
        var from = max(end, aheadTo.load(ordering: .relaxed))
        let limit = min(size, end + window)
        // Schedule only when at least one run is due, so each run is scheduled once.
        guard limit >= from + chunk || (limit == size && from < size) else { return }
        from = from / UInt64(unit) * UInt64(unit)
        while from < limit {
            let r = from..<min(limit, from + chunk)
            // A full queue skips readahead rather than making the reader wait.
            if !cache.background.trySubmit({ [self] in try? prefetch(r) }) { break }
            from = r.upperBound
        }
        aheadTo.store(from, ordering: .relaxed)
    }

    /// Makes the units of `range` present (no copy to a caller).
    private func prefetch(_ range: Range<UInt64>) throws {
        pthread_rwlock_rdlock(&evictLock)
        defer { pthread_rwlock_unlock(&evictLock) }
        let first = Int(range.lowerBound / UInt64(unit)), last = Int((range.upperBound - 1) / UInt64(unit))
        var u = first
        while u <= last {
            if present(u) { u += 1; continue }
            var end = u + 1
            while end <= last && !present(end) { end += 1 }
            try fetch(u..<end)
            u = end
        }
    }

    private func readLocked(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let count = Int(min(UInt64(buffer.count), size - offset))
        let first = Int(offset / UInt64(unit)), last = Int((offset + UInt64(count) - 1) / UInt64(unit))
        cache.touch(key)
        var u = first
        while u <= last {
            if !present(u) {
                // Fetch the run of missing units starting here (at most 4 MiB at once).
                var end = u + 1
                while end <= last && end - u < max(1, (4 << 20) / unit) && !present(end) { end += 1 }
                try fetch(u..<end)
            } else {
                hits.add(1, ordering: .relaxed)
                CacheMetrics.shared.hits.increment()
            }
            u += 1
        }
        let n = try data.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
        guard n == count else { throw BlockIOError.truncated(name: data.path, offset: offset, wanted: count, got: n) }
        return count
    }

    /// Fetches units `r` unless another reader is already fetching them (then waits).
    private func fetch(_ r: Range<Int>) throws {
        pthread_mutex_lock(&fetchMutex)
        var mine: [Int] = []
        for u in r where !present(u) {
            if fetching.contains(u) { continue }
            fetching.insert(u)
            mine.append(u)
        }
        pthread_mutex_unlock(&fetchMutex)
        var failure: Error?
        if let lo = mine.first, let hi = mine.last, hi - lo + 1 == mine.count {
            do { try fill(lo..<(hi + 1)) } catch { failure = error }
        } else {
            for u in mine { do { try fill(u..<(u + 1)) } catch { failure = error; break } }
        }
        pthread_mutex_lock(&fetchMutex)
        for u in mine { fetching.remove(u) }
        pthread_cond_broadcast(&fetchDone)
        // Wait for units other readers are fetching.
        while r.contains(where: { fetching.contains($0) }) { pthread_cond_wait(&fetchDone, &fetchMutex) }
        pthread_mutex_unlock(&fetchMutex)
        if let failure { throw failure }
        for u in r where !present(u) {
            throw BlockIOError.io(name: name, operation: "cache refill", offset: UInt64(u) * UInt64(unit), errno: EIO)
        }
    }

    /// Reads units from upstream, writes them, marks them present.
    private func fill(_ r: Range<Int>) throws {
        let start = UInt64(r.lowerBound) * UInt64(unit)
        let end = min(size, UInt64(r.upperBound) * UInt64(unit))
        let n = Int(end - start)
        upstreamReads.add(1, ordering: .relaxed)
        CacheMetrics.shared.misses.increment()
        CacheMetrics.shared.fillBytes.increment(by: n)
        // A per-thread buffer: no allocation (and page faults) per refill.
        let buf = UnsafeMutableRawBufferPointer(rebasing: CachedFile.fillBuffers.value.reserve(n)[0..<n])
        let got = try upstream.read(into: buf, at: start)
        guard got == n else { throw BlockIOError.truncated(name: upstream.name, offset: start, wanted: n, got: got) }
        try data.write(UnsafeRawBufferPointer(buf), at: start)
        lock.withLock { _ in for u in r { bits[u >> 3] |= 1 << (u & 7) } }
        let pending = lock.withLock { _ -> Int in unsynced.append(contentsOf: r); return unsynced.count }
        // Persist presence in the background, at most once a second (fdatasync is the
        // expensive part): data first, then the bits. Until then a crash only costs
        // refetching the units whose bits were not persisted.
        if pending >= 64 && monotonicSeconds() - lastSync.load(ordering: .relaxed) >= 1
            && !syncing.exchange(true, ordering: .acquiring) {
            lastSync.store(monotonicSeconds(), ordering: .relaxed)
            // fill also runs on the pool's own threads: never wait for room in its queue.
            let queued = cache.background.trySubmit { [self] in
                try? syncMap()
                syncing.store(false, ordering: .releasing)
            }
            if !queued { syncing.store(false, ordering: .releasing) }
        }
        cache.grew(key, by: UInt64(n))
    }

    /// Makes fetched data durable, then records its presence bits. Only bits of units
    /// made durable here (or earlier) are written, even where a map byte also covers
    /// units another thread filled meanwhile.
    func syncMap() throws {
        // Eviction (write side) must not interleave: it would see its cleared map overwritten.
        pthread_rwlock_rdlock(&evictLock)
        defer { pthread_rwlock_unlock(&evictLock) }
        let units: [Int] = lock.withLock { _ in let u = unsynced; unsynced = []; return u }
        guard !units.isEmpty else { return }
        if fdatasync(data.fd) != 0 {
            let e = errno
            lock.withLock { _ in unsynced.append(contentsOf: units) }
            throw BlockIOError.io(name: data.path, operation: "fdatasync", offset: 0, errno: e)
        }
        let bytes = Set(units.map { $0 >> 3 }).sorted()
        let snapshot: [(Int, UInt8)] = lock.withLock { _ in
            for u in units { durable[u >> 3] |= bits[u >> 3] & (1 << (u & 7)) }
            return bytes.map { ($0, durable[$0]) }
        }
        for (byte, value) in snapshot {
            try map.writeBytes([value], at: UInt64(PresenceMap.headerSize + byte))
        }
        if fdatasync(map.fd) != 0 { throw BlockIOError.io(name: map.path, operation: "fdatasync", offset: 0, errno: errno) }
    }

    public func flush() throws { try syncMap() }

    /// Forgets every cached unit of this blob (its bytes failed verification).
    public func invalidate() {
        dropAll()
        cache.dropped(key)
    }

    /// Forgets every cached unit (eviction).
    func dropAll() {
        pthread_rwlock_wrlock(&evictLock)
        defer { pthread_rwlock_unlock(&evictLock) }
        lock.withLock { _ in
            for i in bits.indices { bits[i] = 0; durable[i] = 0 }
            unsynced = []
        }
        try? map.writeBytes([UInt8](repeating: 0, count: bits.count), at: UInt64(PresenceMap.headerSize))
        try? map.flush()
        try? data.discard(offset: 0, length: size)
    }
}
