import Glibc
import Synchronization
import Testing
import Threading

@Suite struct WorkerPoolTests {
    @Test func runsEveryJobOnItsNamedThreads() throws {
        let pool = WorkerPool(threads: 3, capacity: 4, name: "pooltest")
        let ran = Atomic<Int>(0)
        let names = Mutex<Set<String>>([])
        for _ in 0..<200 {
            try pool.submit {
                ran.add(1, ordering: .relaxed)
                names.withLock { _ = $0.insert(currentThreadName()) }
            }
        }
        pool.shutdown()
        #expect(ran.load(ordering: .relaxed) == 200)
        #expect(pool.state == .stopped)
        #expect(names.withLock { $0 }.allSatisfy { $0.hasPrefix("pooltest-") })
    }

    @Test func submitAfterShutdownIsRefusedNotLost() throws {
        let pool = WorkerPool(threads: 2, name: "closed")
        pool.shutdown()
        #expect(throws: WorkerPool.Closed.self) { try pool.submit {} }
        #expect(pool.trySubmit {} == false)
        #expect(pool.state == .stopped)
    }

    @Test func shutdownRunsQueuedJobsFirst() throws {
        let pool = WorkerPool(threads: 1, capacity: 64, name: "drain")
        let gate = ConditionLock(false)
        let ran = Atomic<Int>(0)
        try pool.submit { gate.withLock(when: { $0 }) { _ in } }
        for _ in 0..<50 { try pool.submit { ran.add(1, ordering: .relaxed) } }
        gate.withLock { $0 = true }
        gate.notifyAll()
        pool.shutdown()
        #expect(ran.load(ordering: .relaxed) == 50)
    }

    /// A submitter waiting for room when shutdown begins is woken with an error, not left hanging.
    @Test func waitingSubmitterIsReleasedByShutdown() throws {
        let pool = WorkerPool(threads: 1, capacity: 1, name: "full")
        let gate = ConditionLock(false)
        try pool.submit { gate.withLock(when: { $0 }) { _ in } }   // occupies the worker
        try pool.submit {}                                           // fills the queue
        let outcome = ConditionLock<String?>(nil)
        let waiter = try NamedThread.spawn(name: "submitter") {
            let result: String
            do { try pool.submit {}; result = "accepted" } catch { result = "\(error)" }
            outcome.withLock { $0 = result }
            outcome.notifyAll()
        }
        // Shut down from another thread while the worker is still blocked: the waiting
        // submitter must be refused at once.
        let stopper = try NamedThread.spawn(name: "stopper") { pool.shutdown() }
        let got = outcome.withLock(when: { $0 != nil }, deadline: monotonicSeconds() + 30) { $0 }
        gate.withLock { $0 = true }
        gate.notifyAll()
        waiter.join()
        stopper.join()
        #expect(got == .some("worker pool full is shut down"))
    }

    @Test func shutdownFromAWorkerDoesNotDeadlock() throws {
        let pool = WorkerPool(threads: 2, name: "self")
        let done = ConditionLock(false)
        try pool.submit {
            pool.shutdown()
            done.withLock { $0 = true }
            done.notifyAll()
        }
        let finished = done.withLock(when: { $0 }, deadline: monotonicSeconds() + 30) { $0 }
        #expect(finished == true)
        #expect(throws: WorkerPool.Closed.self) { try pool.submit {} }
    }
}

@Suite struct ToolkitTests {
    @Test func parallelForEachVisitsEachIndexOnceAndRethrows() throws {
        let seen = Mutex<[Int]>([])
        try parallelForEach(count: 1000, threads: 7) { i in seen.withLock { $0.append(i) } }
        #expect(seen.withLock { $0 }.sorted() == Array(0..<1000))

        struct Boom: Error, Equatable { let i: Int }
        #expect(throws: Boom(i: 13)) {
            try parallelForEach(count: 100, threads: 1) { i in if i == 13 { throw Boom(i: 13) } }
        }
    }

    @Test func inFlightLimitBoundsConcurrency() throws {
        let limit = InFlightLimit(limit: 3)
        let now = Atomic<Int>(0), peak = Atomic<Int>(0)
        try parallelForEach(count: 200, threads: 8) { _ in
            limit.enter()
            let n = now.add(1, ordering: .relaxed).newValue
            _ = peak.max(n, ordering: .relaxed)
            sched_yield()
            now.subtract(1, ordering: .relaxed)
            limit.leave()
        }
        limit.waitForAll()
        #expect(peak.load(ordering: .relaxed) <= 3)
        #expect(now.load(ordering: .relaxed) == 0)
    }

    @Test func timedWaitGivesUp() {
        let lock = ConditionLock(0)
        let r = lock.withLock(when: { $0 > 0 }, deadline: monotonicSeconds() + 0.05) { $0 }
        #expect(r == nil)
    }

    @Test func interruptedCallsAreRetried() {
        var calls = 0
        let r = retryingInterrupted { () -> Int32 in
            calls += 1
            if calls < 3 { errno = EINTR; return -1 }
            return 7
        }
        #expect(r == 7 && calls == 3)
    }

    @Test func threadStartNamesTheThread() throws {
        let name = Mutex("")
        let t = try NamedThread.spawn(name: "a-very-long-thread-name") { name.withLock { $0 = currentThreadName() } }
        t.join()
        #expect(name.withLock { $0 } == "a-very-long-thr")
    }
}

func currentThreadName() -> String {
    guard let f = fopen("/proc/thread-self/comm", "r") else { return "" }
    defer { fclose(f) }
    var buf = [CChar](repeating: 0, count: 32)
    guard fgets(&buf, 32, f) != nil else { return "" }
    let s = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return s.hasSuffix("\n") ? String(s.dropLast()) : s
}
