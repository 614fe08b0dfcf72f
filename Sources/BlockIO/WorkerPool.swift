import Glibc

/// A fixed pool of worker threads with a bounded queue: frontends run block commands
/// on it so many are in flight at once and a slow one (a remote fetch) occupies one
/// worker, never the whole device. `submit` blocks while the queue is full.
public final class WorkerPool: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var notEmpty = pthread_cond_t()
    private var notFull = pthread_cond_t()
    private var queue: [() -> Void] = []
    private var head = 0
    private let capacity: Int
    private var stopping = false
    private var threads: [pthread_t] = []

    /// - Parameters:
    ///   - threads: worker count.
    ///   - capacity: most queued (not yet running) jobs before `submit` waits.
    public init(threads: Int, capacity: Int = 1024, name: String = "obd-worker") {
        self.capacity = capacity
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&notEmpty, nil)
        pthread_cond_init(&notFull, nil)
        for _ in 0..<max(1, threads) {
            let box = Unmanaged.passRetained(self)
            var t = pthread_t()
            pthread_create(&t, nil, { arg in
                let pool = Unmanaged<WorkerPool>.fromOpaque(arg!).takeRetainedValue()
                pool.loop()
                return nil
            }, box.toOpaque())
            self.threads.append(t)
        }
    }

    /// Queues `job`; waits while the queue is full.
    public func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(&mutex)
        while queue.count - head >= capacity && !stopping { pthread_cond_wait(&notFull, &mutex) }
        queue.append(job)
        pthread_cond_signal(&notEmpty)
        pthread_mutex_unlock(&mutex)
    }

    /// Queues `job` unless the queue is full; never waits (for jobs queued from the
    /// pool's own threads, which must not block on their own queue).
    @discardableResult
    public func trySubmit(_ job: @escaping () -> Void) -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard queue.count - head < capacity, !stopping else { return false }
        queue.append(job)
        pthread_cond_signal(&notEmpty)
        return true
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            while head == queue.count && !stopping { pthread_cond_wait(&notEmpty, &mutex) }
            if head == queue.count && stopping {
                pthread_mutex_unlock(&mutex)
                return
            }
            let job = queue[head]
            head += 1
            if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            pthread_cond_signal(&notFull)
            pthread_mutex_unlock(&mutex)
            job()
        }
    }

    /// Runs the queued jobs, then stops the workers and waits for them.
    public func shutdown() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&notEmpty)
        pthread_cond_broadcast(&notFull)
        pthread_mutex_unlock(&mutex)
        for t in threads { pthread_join(t, nil) }
        threads = []
    }
}
