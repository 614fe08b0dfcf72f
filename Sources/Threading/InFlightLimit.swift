/// Counts work in flight: `enter` waits while `limit` jobs run, `waitForAll` waits for
/// none to remain (frontends use it to drain a connection or a device).
public final class InFlightLimit: Sendable {
    private let count = ConditionLock(0)
    private let limit: Int

    public init(limit: Int = Int.max) { self.limit = limit }

    public func enter() {
        count.withLock(when: { $0 < limit }) { $0 += 1 }
    }

    public func leave() {
        count.withLock { $0 -= 1 }
        count.notifyAll()
    }

    public func waitForAll() {
        count.withLock(when: { $0 <= 0 }) { _ in }
    }
}
