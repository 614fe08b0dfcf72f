import Glibc

/// A fixed pool of named worker threads with a bounded queue. Frontends run block
/// commands on it, so many are in flight at once and a slow one (a remote fetch)
/// occupies one worker, never the whole device.
///
/// States: `running` (jobs are accepted), `draining` (shutdown began: queued jobs
/// still run, new ones are refused), `stopped` (every worker has ended). A refused
/// job is reported to its submitter (`submit` throws, `trySubmit` returns false), so
/// nobody waits for a job that will never run.
public final class WorkerPool: Sendable {
    public enum State: Sendable, Equatable { case running, draining, stopped }

    /// `submit` after shutdown began.
    public struct Closed: Error, CustomStringConvertible {
        public let pool: String
        public var description: String { "worker pool \(pool) is shut down" }
    }

    private struct Queue {
        var jobs: [() -> Void] = []
        var head = 0
        var state = State.running
        var pending: Int { jobs.count - head }
    }

    public let name: String
    private let capacity: Int
    private let queue = ConditionLock(Queue())
    /// The workers hold the pool strongly until they end: a pool lives until shut down.
    private let workers: ConditionLock<[JoinHandle]>

    /// - Parameters:
    ///   - threads: worker count (at least 1).
    ///   - capacity: most queued (not yet running) jobs before `submit` waits.
    ///   - name: the workers' thread name (numbered) and the name in errors.
    public init(threads: Int, capacity: Int = 1024, name: String = "obd-worker") {
        self.name = name
        self.capacity = max(1, capacity)
        workers = ConditionLock([])
        for i in 0..<max(1, threads) {
            // A pool that cannot start a thread works with fewer; with none it would
            // accept jobs that never run, which is worse than stopping the process.
            do {
                let t = try NamedThread.spawn(name: "\(name)-\(i)") { [self] in loop() }
                workers.withLock { $0.append(t) }
            } catch {
                if i == 0 { fatalError("\(error)") }
                break
            }
        }
    }

    /// The pool's state.
    public var state: State { queue.withLock { $0.state } }

    /// Queues `job`; waits while the queue is full. Throws `Closed` once shutdown began
    /// (also when it begins while this call waits for room).
    public func submit(_ job: @escaping () -> Void) throws {
        let accepted: Bool = queue.withLock(when: { $0.pending < capacity || $0.state != .running }) { q in
            guard q.state == .running else { return false }
            q.jobs.append(job)
            return true
        }
        guard accepted else { throw Closed(pool: name) }
        queue.notifyAll()
    }

    /// Queues `job` unless the queue is full or the pool is shutting down; never waits
    /// (for jobs queued from the pool's own threads, which must not block on their queue).
    @discardableResult
    public func trySubmit(_ job: @escaping () -> Void) -> Bool {
        let accepted: Bool = queue.withLock { q in
            guard q.state == .running, q.pending < capacity else { return false }
            q.jobs.append(job)
            return true
        }
        if accepted { queue.notifyAll() }
        return accepted
    }

    private func loop() {
        while true {
            let job: (() -> Void)? = queue.withLock(when: { $0.pending > 0 || $0.state != .running }) { q in
                guard q.pending > 0 else { return nil }
                let j = q.jobs[q.head]
                // The slot stays until the queue is compacted: drop the job's captures now,
                // so what it holds (a connection, a disk's files) goes when it ends.
                q.jobs[q.head] = {}
                q.head += 1
                if q.head > 1024 && q.head * 2 > q.jobs.count {
                    q.jobs.removeFirst(q.head)
                    q.head = 0
                }
                return j
            }
            guard let job else { return }
            // Room in the queue for a waiting submitter.
            queue.notifyAll()
            job()
        }
    }

    /// Refuses new jobs, runs the queued ones, then waits for every worker to end.
    /// Idempotent; from one of the pool's own threads it does not wait for itself.
    public func shutdown() {
        queue.withLock { q in if q.state == .running { q.state = .draining } }
        queue.notifyAll()
        let handles = workers.withLock { w -> [JoinHandle] in let h = w; w = []; return h }
        for h in handles where !h.isCurrentThread { h.join() }
        queue.withLock { $0.state = .stopped }
    }
}
