import Synchronization

/// Work done on behalf of something that can go away, such as a device being removed:
/// code that waits a long time (the registry client riding out an outage) polls the
/// calling thread's token and gives up once it is cancelled. The token follows the
/// work, not a shared resource: two devices reading one cached blob each stop only
/// their own reads.
public final class CancellationToken: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    /// Cancels the work running under this token, now and later.
    public func cancel() { flag.store(true, ordering: .releasing) }

    public var isCancelled: Bool { flag.load(ordering: .acquiring) }

    private final class Slot { var token: CancellationToken? }
    private static let slot = ThreadLocal { Slot() }

    /// The token of the work running on the calling thread, if any.
    public static var current: CancellationToken? { slot.value.token }

    /// Runs `body` with this token as the calling thread's current one.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        let s = CancellationToken.slot.value
        let was = s.token
        s.token = self
        defer { s.token = was }
        return try body()
    }
}
