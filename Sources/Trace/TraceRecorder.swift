import BlockIO
import Synchronization
import Threading

/// Collects the reads of a recording from many threads without a shared lock per read.
///
/// Each thread appends to its own buffer (registered with the recorder on the thread's
/// first record, its lock taken only by that thread while recording), and stamps every
/// record with a number from one atomic counter. `finish` gathers the buffers and sorts
/// by that number, so the trace keeps the order in which reads completed across all
/// threads. A recorder can record several times; records from an earlier recording
/// that arrive late are dropped by their generation.
public final class TraceRecorder: Sendable {
    struct Entry {
        var sequence: UInt64
        var offset: Int64
        var count: UInt64
        var layerIndex: UInt32
        var generation: UInt32
    }

    final class Buffer: Sendable {
        let entries = Mutex<[Entry]>([])
    }

    final class Buffers: Sendable {
        let all = Mutex<[Buffer]>([])
    }

    /// Default most records per recording (96 MiB of trace); later reads are counted as dropped.
    public static let defaultMaxRecords = 1 << 22

    private let buffers = Buffers()
    /// Made by the first `begin`, so an image that never records holds no thread-local key
    /// (a process has about a thousand); read on the hot path with one atomic load.
    private let local = AtomicLazyReference<ThreadLocal<Buffer>>()
    private let sequence = Atomic<UInt64>(0)
    private let dropped = Atomic<Int>(0)
    /// generation << 1 | recording bit: one load tells whether and for whom to record.
    private let state = Atomic<UInt64>(0)
    private let control = Mutex<Void>(())
    public let maxRecords: Int

    public init(maxRecords: Int = TraceRecorder.defaultMaxRecords) {
        self.maxRecords = maxRecords
    }

    /// Whether a recording is running.
    public var isRecording: Bool { state.load(ordering: .relaxed) & 1 == 1 }

    /// Records taken by the running (or last) recording so far.
    public var recordCount: Int { min(Int(sequence.load(ordering: .relaxed)), maxRecords) }

    /// Reads not recorded because the recording held `maxRecords` already.
    public var droppedCount: Int { dropped.load(ordering: .relaxed) }

    /// Starts a new recording (discarding anything left from an earlier one).
    public func begin() {
        control.withLock { _ in
            if local.load() == nil {
                let registry = buffers
                _ = local.storeIfNil(ThreadLocal {
                    let b = Buffer()
                    registry.all.withLock { $0.append(b) }
                    return b
                })
            }
            let generation = (state.load(ordering: .acquiring) >> 1) &+ 1
            for b in buffers.all.withLock({ $0 }) { b.entries.withLock { $0.removeAll(keepingCapacity: false) } }
            sequence.store(0, ordering: .relaxed)
            dropped.store(0, ordering: .relaxed)
            state.store(generation << 1 | 1, ordering: .releasing)
        }
    }

    /// Records a read of `count` bytes at `offset` of lower `layerIndex`, if recording.
    @inline(__always)
    public func record(layerIndex: UInt32, offset: UInt64, count: Int) {
        let s = state.load(ordering: .acquiring)
        guard s & 1 == 1 else { return }
        recordSlow(generation: UInt32(truncatingIfNeeded: s >> 1), layerIndex: layerIndex, offset: offset, count: count)
    }

    private func recordSlow(generation: UInt32, layerIndex: UInt32, offset: UInt64, count: Int) {
        let seq = sequence.add(1, ordering: .relaxed).oldValue
        guard seq < UInt64(maxRecords), let local = local.load() else {
            dropped.add(1, ordering: .relaxed)
            return
        }
        let e = Entry(sequence: seq, offset: Int64(truncatingIfNeeded: offset), count: UInt64(count),
                      layerIndex: layerIndex, generation: generation)
        local.value.entries.withLock { $0.append(e) }
    }

    /// Ends the recording and returns its records in the order the reads completed.
    /// Returns nothing when no recording runs.
    public func finish() -> [TraceRecord] {
        control.withLock { _ in
            let s = state.load(ordering: .acquiring)
            guard s & 1 == 1 else { return [] }
            state.store(s & ~1, ordering: .releasing)
            let generation = UInt32(truncatingIfNeeded: s >> 1)
            var all: [Entry] = []
            for b in buffers.all.withLock({ $0 }) {
                let taken = b.entries.withLock { e -> [Entry] in
                    defer { e.removeAll(keepingCapacity: false) }
                    return e
                }
                all.append(contentsOf: taken.lazy.filter { $0.generation == generation })
            }
            all.sort { $0.sequence < $1.sequence }
            return all.map { TraceRecord(layerIndex: $0.layerIndex, count: $0.count, offset: $0.offset) }
        }
    }
}
