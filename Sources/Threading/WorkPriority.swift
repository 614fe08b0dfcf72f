/// Whether the calling thread does work a user waits for (foreground: a device's reads)
/// or work that only gets ahead of the user (background: trace prefetch, readahead).
/// Shared resources such as the registry connections give background work only a share,
/// so a foreground read never queues behind it.
public enum WorkPriority: Sendable, Equatable {
    case foreground, background

    private final class Flag { var background = false }
    private static let flag = ThreadLocal { Flag() }

    /// The calling thread's priority (foreground unless marked).
    @inline(__always)
    public static var current: WorkPriority { flag.value.background ? .background : .foreground }

    /// Runs `body` with the calling thread marked as background work.
    public static func background<R>(_ body: () throws -> R) rethrows -> R {
        let f = flag.value
        let was = f.background
        f.background = true
        defer { f.background = was }
        return try body()
    }
}
