import Glibc

/// Counts work in flight: `enter` waits while `limit` jobs run, `waitForAll` waits for
/// none to remain (frontends use it to drain a connection or a device).
public final class InFlightLimit: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var count = 0
    private let limit: Int

    public init(limit: Int = Int.max) {
        self.limit = limit
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    public func enter() {
        pthread_mutex_lock(&mutex)
        while count >= limit { pthread_cond_wait(&cond, &mutex) }
        count += 1
        pthread_mutex_unlock(&mutex)
    }

    public func leave() {
        pthread_mutex_lock(&mutex)
        count -= 1
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    public func waitForAll() {
        pthread_mutex_lock(&mutex)
        while count > 0 { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
}
