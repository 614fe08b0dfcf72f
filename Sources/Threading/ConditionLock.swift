import Glibc

/// A value guarded by a mutex with a condition variable, both at a stable heap address
/// (a `pthread_mutex_t` stored as a Swift property has none). For state that threads
/// wait on (queues, counters, in-flight sets); plain state uses `Synchronization.Mutex`.
public final class ConditionLock<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    public init(_ initial: State) {
        state = initial
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        // Timed waits measure on the monotonic clock, not the wall clock.
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    /// Runs `body` with the state locked.
    @inline(__always)
    public func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }

    /// Waits until `ready` holds for the state, then runs `body` with it locked.
    public func withLock<R>(when ready: (State) -> Bool, _ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !ready(state) { pthread_cond_wait(cond, mutex) }
        return try body(&state)
    }

    /// Like `withLock(when:_:)`, but gives up at `deadline` (monotonic seconds) and
    /// returns nil then without running `body`.
    public func withLock<R>(when ready: (State) -> Bool, deadline: Double, _ body: (inout State) throws -> R) rethrows -> R? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var ts = timespec(tv_sec: Int(deadline), tv_nsec: Int((deadline - Double(Int(deadline))) * 1e9))
        while !ready(state) {
            if pthread_cond_timedwait(cond, mutex, &ts) == ETIMEDOUT && !ready(state) { return nil }
        }
        return try body(&state)
    }

    /// Wakes every waiter to re-check its condition (call after changing the state).
    @inline(__always)
    public func notifyAll() { pthread_cond_broadcast(cond) }

    /// Wakes one waiter (when any one of them can make progress).
    @inline(__always)
    public func notifyOne() { pthread_cond_signal(cond) }
}
