import BlockIO
import Synchronization
import Threading

/// Progress of a replay.
public struct ReplayProgress: Sendable, Equatable {
    /// Ranges read (or failed) so far, of `total`.
    public var done: Int
    public var total: Int
    /// Bytes read by ranges that succeeded.
    public var bytes: UInt64
    /// Ranges whose read failed (logged; the replay goes on).
    public var failures: Int

    /// Progress of `done` of `total` ranges, `bytes` read, `failures` failed.
    public init(done: Int, total: Int, bytes: UInt64, failures: Int) {
        self.done = done
        self.total = total
        self.bytes = bytes
        self.failures = failures
    }
}

/// Runs a `ReplayPlan`: reads each range from its layer file (which pulls remote bytes
/// into the cache below), in plan order, with at most `concurrency` ranges in flight on
/// as many threads. The threads take ranges from one atomic index (no lock). `stop`
/// makes them take no new range and joins every thread, so a closing image leaves no
/// replay thread behind; it waits at most for the reads already in flight.
public final class TraceReplayer: Sendable {
    public let plan: ReplayPlan
    public let concurrency: Int
    private let files: [UInt32: any BlockFile]
    private let next = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private let done = Atomic<Int>(0)
    private let bytes = Atomic<UInt64>(0)
    private let failures = Atomic<Int>(0)
    /// Workers still running; nil before `start`.
    private let running = ConditionLock<Int?>(nil)
    private let handles = Mutex<[JoinHandle]>([])
    private let log: @Sendable (String) -> Void

    /// - Parameters:
    ///   - files: the layer file of each layer index in the plan; a range of another
    ///     index counts as a failure.
    ///   - log: receives the first few read failures and one line when the replay ends.
    public init(plan: ReplayPlan, files: [UInt32: any BlockFile], concurrency: Int,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.plan = plan
        self.files = files
        self.concurrency = max(1, concurrency)
        self.log = log
    }

    /// Starts the worker threads (once; not after `stop`). Throws if no thread can start.
    public func start() throws {
        let workers = min(concurrency, plan.ranges.count)
        let fresh = running.withLock { r -> Bool in
            guard r == nil else { return false }
            r = workers
            return true
        }
        guard fresh else { return }
        if workers == 0 { running.notifyAll(); return }
        let t0 = monotonicSeconds()
        var started: [JoinHandle] = []
        var failure: (any Error)?
        for i in 0..<workers {
            do {
                started.append(try NamedThread.spawn(name: "obd-prefetch-\(i)") { [self] in
                    // Prefetch gets only a share of the registry connections.
                    WorkPriority.background { work() }
                    workerExited(since: t0)
                })
            } catch {
                failure = error
                workerExited(since: t0)
            }
        }
        handles.withLock { $0 += started }
        if let failure, started.isEmpty { throw failure }
    }

    private func workerExited(since t0: Double) {
        let left = running.withLock { r -> Int in
            r = (r ?? 1) - 1
            return r!
        }
        guard left == 0 else { return }
        let p = progress
        let ms = Int((monotonicSeconds() - t0) * 1000)
        log("prefetch \(stopped.load(ordering: .relaxed) ? "stopped" : "finished"): \(p.done - p.failures) of \(p.total) ranges, \(p.bytes) bytes in \(ms) ms"
            + (p.failures > 0 ? ", \(p.failures) failed" : ""))
        running.notifyAll()
    }

    private func work() {
        let largest = plan.ranges.lazy.map(\.length).max() ?? 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(max(largest, 1)), alignment: 4096)
        defer { buffer.deallocate() }
        while !stopped.load(ordering: .relaxed) {
            let i = next.add(1, ordering: .relaxed).oldValue
            guard i < plan.ranges.count else { break }
            let r = plan.ranges[i]
            do {
                guard let file = files[r.layerIndex] else {
                    throw BlockIOError.unsupported(name: "layer \(r.layerIndex)", operation: "prefetch (no such layer)")
                }
                let n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(r.length)]), at: r.offset)
                bytes.add(UInt64(n), ordering: .relaxed)
            } catch {
                if failures.add(1, ordering: .relaxed).newValue <= 5 { log("prefetch of \(r) failed: \(error)") }
            }
            done.add(1, ordering: .relaxed)
        }
    }

    /// Ranges done, bytes read and failures so far.
    public var progress: ReplayProgress {
        ReplayProgress(done: done.load(ordering: .relaxed), total: plan.ranges.count,
                       bytes: bytes.load(ordering: .relaxed), failures: failures.load(ordering: .relaxed))
    }

    /// Whether the replay has ended (every range done, or stopped) and no worker runs.
    public var isFinished: Bool { running.withLock { $0 == 0 } }

    /// Waits up to `seconds` for the replay to end; true if it has.
    public func wait(seconds: Double) -> Bool {
        running.withLock(when: { $0 == 0 }, deadline: monotonicSeconds() + seconds) { _ in true } ?? false
    }

    /// Takes no new range, waits for the reads in flight and joins every worker.
    /// Idempotent; before `start` it only prevents the start.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        let never = running.withLock { r -> Bool in
            guard r == nil else { return false }
            r = 0
            return true
        }
        if never { running.notifyAll(); return }
        for h in handles.withLock({ h -> [JoinHandle] in defer { h = [] }; return h }) where !h.isCurrentThread { h.join() }
        running.withLock(when: { $0 == 0 }) { _ in }
    }
}
