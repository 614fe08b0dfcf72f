import BlockIO
import Glibc
import Synchronization
import Threading

/// A remote blob read through the cache: present units come from the local data file,
/// missing ones are fetched from upstream in aligned `refillSize` units (one fetch per
/// unit even when several readers miss it at once), written, then served.
///
/// A hit takes no lock: presence bits are atomics, and an eviction (which clears the
/// bits and punches the data out) is detected by an epoch counter that is odd while it
/// runs, so a reader that raced one retries on the slow path. Refills and map syncs
/// take the eviction lock's read side; eviction takes its write side.
public final class CachedFile: BlockFile, Sendable {
    public let key: String
    public let upstream: any BlockFile
    public let size: UInt64
    let unit: Int
    unowned let cache: BlockCache
    /// Where usage and LRU order are reported.
    let accounting: any CacheAccounting
    private let data: LocalFile
    private let map: LocalFile
    private let units: Int
    private let bits: PresenceBits
    /// Refill bookkeeping (slow path only): units being fetched, units whose presence is
    /// not yet persisted, and the bits known durable (fdatasync done), the only ones
    /// that reach the map file.
    private struct Refills {
        var fetching: Set<Int> = []
        var unsynced: [Int] = []
        var durable: [UInt8]
    }
    private let refills: ConditionLock<Refills>
    /// Odd while an eviction runs; changes with every eviction.
    private let epoch = Atomic<UInt64>(0)
    private let evictLock = ReadWriteLock()
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

    /// Tests only: runs between a hit's presence check and its copy (where an eviction
    /// can strike).
    nonisolated(unsafe) var afterPresenceCheck: (() -> Void)?

    /// Units served from the cache.
    public let hits = Atomic<Int>(0)

    public var name: String { upstream.name }

    private static let fillBuffers = ThreadLocal { ScratchBuffer(capacity: 4 << 20) }

    init(cache: BlockCache, key: String, upstream: any BlockFile, accounting: any CacheAccounting) throws {
        self.cache = cache
        self.key = key
        self.upstream = upstream
        self.accounting = accounting
        size = upstream.size
        unit = cache.refillSize
        let dataPath = cache.path(key), mapPath = dataPath + ".map"
        data = try LocalFile(path: dataPath, mode: access(dataPath, F_OK) == 0 ? .readWrite : .createExclusive)
        map = try LocalFile(path: mapPath, mode: access(mapPath, F_OK) == 0 ? .readWrite : .createExclusive)
        units = Int((size + UInt64(unit) - 1) / UInt64(unit))
        let header = PresenceMap.header(unit: unit, size: size)
        var existing: [UInt8] = []
        if map.size == UInt64(PresenceMap.headerSize + (units + 7) / 8) {
            existing = try map.readBytes(at: 0, count: Int(map.size))
        }
        var initial: [UInt8]
        // A map is trusted only with its data file at the full blob size (a truncated or
        // replaced data file would turn "present" units into holes of zeros).
        if existing.count >= PresenceMap.headerSize && Array(existing[0..<PresenceMap.headerSize]) == header && data.size == size {
            initial = Array(existing[PresenceMap.headerSize...])
        } else {
            // New, or written for another unit size / blob size, or damaged: start empty.
            initial = [UInt8](repeating: 0, count: (units + 7) / 8)
            try data.truncate(to: 0)
            try map.truncate(to: 0)
            try map.writeBytes(header + initial, at: 0)
            try map.flush()
        }
        bits = PresenceBits(units: units, bytes: initial)
        refills = ConditionLock(Refills(durable: initial))
        if data.size != size { try data.truncate(to: size) }
    }

    deinit { try? syncMap() }

    /// Bytes of the units present (the last unit counted at its true size).
    var presentBytes: UInt64 {
        var n: UInt64 = 0
        for u in 0..<units where bits.contains(u) { n += unitBytes(u) }
        return n
    }

    @inline(__always)
    private func unitBytes(_ u: Int) -> UInt64 {
        min(UInt64(unit), size - UInt64(u) * UInt64(unit))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), size - offset))
        let first = Int(offset / UInt64(unit)), last = Int((offset + UInt64(count) - 1) / UInt64(unit))
        let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
        accounting.used()
        // Fast path: every unit present and no eviction before or during the copy.
        let before = epoch.load(ordering: .acquiring)
        if before & 1 == 0 && bits.containsAll(first...last) {
            afterPresenceCheck?()
            let n = try data.read(into: dst, at: offset)
            if epoch.load(ordering: .acquiring) == before {
                guard n == count else { throw BlockIOError.truncated(name: data.path, offset: offset, wanted: count, got: n) }
                hits.add(last - first + 1, ordering: .relaxed)
                CacheMetrics.shared.hits.increment(by: last - first + 1)
                readAhead(after: offset, count: count)
                return count
            }
        }
        // Slow path: refill what is missing, under the eviction lock's read side, so no
        // unit can vanish between its presence check and the copy.
        try evictLock.withReadLock { try readRefilling(into: dst, at: offset, units: first...last) }
        accounting.settle()
        readAhead(after: offset, count: count)
        return count
    }

    /// A reader that continues where the last read ended gets data fetched ahead of it in
    /// the background. Window and run size grow with the streak of back-to-back bytes (a
    /// run of 4 MiB at first, up to 32 MiB in a window of `readahead`): a long scan costs
    /// a few large range requests (a registry spends about as much per request as per
    /// 10 MiB it sends) while a short one fetches little it will not read.
    private func readAhead(after offset: UInt64, count: Int) {
        let end = offset + UInt64(count)
        // Up to a unit past where the last read ended (or 512 bytes before it) counts as
        // continuing: readers of a tar skip the headers between files, gzip spans overlap
        // by a byte. A block read again and again does not.
        let previous = lastEnd.exchange(end, ordering: .relaxed)
        let sequential = previous != UInt64.max && offset <= previous &+ UInt64(unit) && offset &+ 512 >= previous
        // A streak of at least 1 MiB of back-to-back reads: a scan, not a few adjacent
        // reads (such as a layer's index at open) that readahead would only waste.
        let run = sequential ? streak.add(UInt64(count), ordering: .relaxed).newValue : 0
        if !sequential { streak.store(UInt64(count), ordering: .relaxed) }
        guard sequential, run >= 1 << 20, cache.readahead > 0, end < size else { return }
        let (chunk, window) = CachedFile.readaheadShape(streak: run, unit: UInt64(unit), readahead: cache.readahead)
        var from = max(end, aheadTo.load(ordering: .relaxed)) / UInt64(unit) * UInt64(unit)
        let limit = min(size, end + window)
        // Whole runs only (a short one only at the end of the blob), each scheduled once:
        // a run cut at the window's edge would cost a request for a few units.
        guard from + chunk <= limit || (limit == size && from < size) else { return }
        while from < size && (from + chunk <= limit || limit == size) {
            let r = from..<min(size, from + chunk)
            // A full queue skips readahead rather than making the reader wait.
            if !cache.background.trySubmit({ [self] in WorkPriority.background { try? prefetch(r) } }) { break }
            from = r.upperBound
        }
        aheadTo.store(from, ordering: .relaxed)
    }

    /// Run size and window of readahead after `streak` sequential bytes: the window is
    /// four times the streak (at least 4 MiB, at most `readahead`), a run half the
    /// window (4 to 32 MiB, never more than the window), both whole units.
    static func readaheadShape(streak: UInt64, unit: UInt64, readahead: UInt64) -> (chunk: UInt64, window: UInt64) {
        let window = max(unit, min(readahead, max(4 << 20, streak.multipliedReportingOverflow(by: 4).partialValue)))
        let chunk = min(window, min(max(window / 2, 4 << 20), 32 << 20))
        return (max(unit, chunk / unit * unit), window)
    }

    /// Makes the units of `range` present (no copy to a caller).
    public func prefetch(_ range: Range<UInt64>) throws {
        guard range.lowerBound < size, !range.isEmpty else { return }
        let upper = min(range.upperBound, size)
        try evictLock.withReadLock {
            let first = Int(range.lowerBound / UInt64(unit)), last = Int((upper - 1) / UInt64(unit))
            var u = first
            while u <= last {
                if bits.contains(u) { u += 1; continue }
                var end = u + 1
                while end <= last && !bits.contains(end) { end += 1 }
                try fetch(u..<end)
                u = end
            }
        }
        accounting.settle()
    }

    private func readRefilling(into dst: UnsafeMutableRawBufferPointer, at offset: UInt64, units r: ClosedRange<Int>) throws {
        var u = r.lowerBound
        var present = 0
        while u <= r.upperBound {
            if !bits.contains(u) {
                // Fetch the run of missing units starting here (at most 4 MiB at once).
                var end = u + 1
                while end <= r.upperBound && end - u < max(1, (4 << 20) / unit) && !bits.contains(end) { end += 1 }
                try fetch(u..<end)
                u = end
            } else {
                present += 1
                u += 1
            }
        }
        if present > 0 {
            hits.add(present, ordering: .relaxed)
            CacheMetrics.shared.hits.increment(by: present)
        }
        let n = try data.read(into: dst, at: offset)
        guard n == dst.count else { throw BlockIOError.truncated(name: data.path, offset: offset, wanted: dst.count, got: n) }
    }

    /// Fetches units `r` unless another reader is already fetching them (then waits).
    /// Background work (prefetch, readahead) first takes one of the cache's background
    /// fetch slots, before it claims any unit: a foreground reader never waits for a
    /// background fetch that is only queued, and background fetches never hold more than
    /// their share of the registry's connections.
    private func fetch(_ r: Range<Int>) throws {
        let slot = WorkPriority.current == .background
        if !slot { CacheMetrics.shared.foregroundWaits.increment() }
        if slot { cache.backgroundFetches.enter() }
        defer { if slot { cache.backgroundFetches.leave() } }
        // A unit another reader was fetching may still be missing when it is done: that
        // reader failed (or its device was removed and its fetch cancelled). Then this
        // reader fetches it itself, once more.
        for round in 0..<2 {
            let mine: [Int] = refills.withLock { st in
                var m: [Int] = []
                for u in r where !bits.contains(u) && !st.fetching.contains(u) {
                    st.fetching.insert(u)
                    m.append(u)
                }
                return m
            }
            var failure: Error?
            if let lo = mine.first, let hi = mine.last, hi - lo + 1 == mine.count {
                do { try fill(lo..<(hi + 1)) } catch { failure = error }
            } else {
                for u in mine { do { try fill(u..<(u + 1)) } catch { failure = error; break } }
            }
            refills.withLock { st in for u in mine { st.fetching.remove(u) } }
            refills.notifyAll()
            if let failure { throw failure }
            try waitForOtherFetches(of: r)
            guard let missing = r.first(where: { !bits.contains($0) }) else { return }
            if round == 1 {
                throw BlockIOError.io(name: name, operation: "cache refill", offset: UInt64(missing) * UInt64(unit), errno: EIO)
            }
        }
    }

    /// Waits until no other reader is fetching a unit of `r`. A reader whose work is
    /// cancelled (its device is going away) stops waiting within a fifth of a second.
    private func waitForOtherFetches(of r: Range<Int>) throws {
        let idle = { (st: Refills) in !r.contains(where: { st.fetching.contains($0) }) }
        guard let token = CancellationToken.current else {
            refills.withLock(when: idle) { _ in }
            return
        }
        while refills.withLock(when: idle, deadline: monotonicSeconds() + 0.2, { _ in true }) == nil {
            if token.isCancelled {
                throw BlockIOError.io(name: name, operation: "cache refill (cancelled)", offset: UInt64(r.lowerBound) * UInt64(unit),
                                      errno: ECANCELED)
            }
        }
    }

    /// Reads units from upstream, writes them, marks them present. A streaming upstream
    /// (a registry blob) is written piece by piece as the body arrives, and each unit is
    /// published as soon as it is complete: no buffer for the whole run, and a reader
    /// waiting for the run's first unit does not wait for its last.
    private func fill(_ r: Range<Int>) throws {
        let start = UInt64(r.lowerBound) * UInt64(unit)
        let end = min(size, UInt64(r.upperBound) * UInt64(unit))
        let n = Int(end - start)
        upstreamReads.add(1, ordering: .relaxed)
        CacheMetrics.shared.misses.increment()
        CacheMetrics.shared.fillBytes.increment(by: n)
        var published = r.lowerBound
        defer {
            let bytes = published == r.lowerBound ? 0 : min(size, UInt64(published) * UInt64(unit)) - start
            if bytes > 0 { accounting.grew(by: bytes) }
        }
        if let streaming = upstream as? any StreamingBlockFile {
            var written = start
            _ = try streaming.stream(at: start, count: n) { piece in
                try data.write(piece, at: written)
                written += UInt64(piece.count)
                var complete = published
                while complete < r.upperBound && min(size, UInt64(complete + 1) * UInt64(unit)) <= written { complete += 1 }
                if complete > published {
                    publish(published..<complete)
                    published = complete
                }
            }
            guard published == r.upperBound else {
                throw BlockIOError.truncated(name: upstream.name, offset: start, wanted: n, got: Int(written - start))
            }
        } else {
            // A per-thread buffer: no allocation (and page faults) per refill.
            let buf = UnsafeMutableRawBufferPointer(rebasing: CachedFile.fillBuffers.value.reserve(n)[0..<n])
            let got = try upstream.read(into: buf, at: start)
            guard got == n else { throw BlockIOError.truncated(name: upstream.name, offset: start, wanted: n, got: got) }
            try data.write(UnsafeRawBufferPointer(buf), at: start)
            publish(r)
            published = r.upperBound
        }
        let pending = refills.withLock { $0.unsynced.count }
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
    }

    /// Marks units whose data is written present and wakes the readers waiting for them.
    private func publish(_ r: Range<Int>) {
        // Data first, then the bits (released): a reader that sees a bit sees the data.
        for u in r { bits.insert(u) }
        refills.withLock { st in
            st.unsynced.append(contentsOf: r)
            for u in r { st.fetching.remove(u) }
        }
        refills.notifyAll()
    }

    /// Makes fetched data durable, then records its presence bits. Only bits of units
    /// made durable here (or earlier) are written, even where a map byte also covers
    /// units another thread filled meanwhile.
    func syncMap() throws {
        // Eviction (write side) must not interleave: it would see its cleared map overwritten.
        try evictLock.withReadLock {
            let units: [Int] = refills.withLock { st in let u = st.unsynced; st.unsynced = []; return u }
            guard !units.isEmpty else { return }
            if fdatasync(data.fd) != 0 {
                let e = errno
                refills.withLock { $0.unsynced.append(contentsOf: units) }
                throw BlockIOError.io(name: data.path, operation: "fdatasync", offset: 0, errno: e)
            }
            let bytes = Set(units.map { $0 >> 3 }).sorted()
            let snapshot: [(Int, UInt8)] = refills.withLock { st in
                for u in units where bits.contains(u) { st.durable[u >> 3] |= 1 << (u & 7) }
                return bytes.map { ($0, st.durable[$0]) }
            }
            for (byte, value) in snapshot {
                try map.writeBytes([value], at: UInt64(PresenceMap.headerSize + byte))
            }
            if fdatasync(map.fd) != 0 { throw BlockIOError.io(name: map.path, operation: "fdatasync", offset: 0, errno: errno) }
        }
    }

    public func flush() throws { try syncMap() }

    /// Forgets every cached unit of this blob (its bytes failed verification).
    public func invalidate() {
        dropAll()
        accounting.dropped()
    }

    /// Forgets every cached unit (eviction).
    func dropAll() {
        evictLock.withWriteLock {
            // Odd epoch: hits that start now take the slow path; hits already copying
            // see the epoch change afterwards and retry there.
            epoch.add(1, ordering: .acquiringAndReleasing)
            defer { epoch.add(1, ordering: .releasing) }
            bits.removeAll()
            refills.withLock { st in
                for i in st.durable.indices { st.durable[i] = 0 }
                st.unsynced = []
            }
            try? map.writeBytes([UInt8](repeating: 0, count: (units + 7) / 8), at: UInt64(PresenceMap.headerSize))
            try? map.flush()
            try? data.discard(offset: 0, length: size)
        }
    }
}

/// One presence bit per refill unit, as atomic 64-bit words: readers test them with
/// no lock; refills set them (release) after the unit's data is written.
final class PresenceBits: @unchecked Sendable {
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    private let count: Int

    init(units: Int, bytes: [UInt8]) {
        count = max(1, (units + 63) / 64)
        words = .allocate(capacity: count)
        for w in 0..<count {
            var v: UInt64 = 0
            for b in 0..<8 where w * 8 + b < bytes.count { v |= UInt64(bytes[w * 8 + b]) << (8 * b) }
            (words + w).initialize(to: Atomic(v))
        }
    }

    deinit {
        words.deinitialize(count: count)
        words.deallocate()
    }

    @inline(__always)
    func contains(_ u: Int) -> Bool {
        words[u >> 6].load(ordering: .acquiring) & (1 << UInt64(u & 63)) != 0
    }

    /// Whether every unit in `r` is present (word by word).
    @inline(__always)
    func containsAll(_ r: ClosedRange<Int>) -> Bool {
        var u = r.lowerBound
        while u <= r.upperBound {
            let w = u >> 6
            let hi = min(r.upperBound, w * 64 + 63)
            let lowBit = u & 63, highBit = hi & 63
            let mask: UInt64 = (highBit == 63 ? ~0 : (UInt64(1) << UInt64(highBit + 1)) - 1) & ~((UInt64(1) << UInt64(lowBit)) - 1)
            if words[w].load(ordering: .acquiring) & mask != mask { return false }
            u = hi + 1
        }
        return true
    }

    @inline(__always)
    func insert(_ u: Int) {
        words[u >> 6].bitwiseOr(1 << UInt64(u & 63), ordering: .releasing)
    }

    func removeAll() {
        for w in 0..<count { words[w].store(0, ordering: .releasing) }
    }
}
