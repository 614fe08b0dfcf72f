import Glibc

/// The one way obd starts OS threads: each gets a name (seen in `top -H`, gdb and
/// perf), and a failure to start is an error, not a silent nothing.
public enum NamedThread {
    /// Thread start failed (`pthread_create`'s error number).
    public struct StartError: Error, CustomStringConvertible {
        public let name: String
        public let errno: Int32
        public var description: String { "cannot start thread \(name): \(String(cString: strerror(errno)))" }
    }

    /// Starts `body` on a new detached thread named `name` (long-lived loops: servers,
    /// pollers, background work that stops through its own state).
    public static func detach(name: String, _ body: @escaping @Sendable () -> Void) throws {
        let t = try start(name: name, body)
        pthread_detach(t)
    }

    /// Starts `body` on a new thread named `name`; the caller joins it with `join()`.
    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws -> JoinHandle {
        JoinHandle(thread: try start(name: name, body))
    }

    private static func start(name: String, _ body: @escaping @Sendable () -> Void) throws -> pthread_t {
        final class Box {
            let name: String
            let body: @Sendable () -> Void
            init(_ n: String, _ b: @escaping @Sendable () -> Void) { name = n; body = b }
        }
        let box = Unmanaged.passRetained(Box(name, body))
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            setCurrentThreadName(b.name)
            b.body()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw StartError(name: name, errno: rc)
        }
        return t
    }
}

/// A started thread that must be joined once.
public final class JoinHandle: @unchecked Sendable {
    private var thread: pthread_t?

    init(thread: pthread_t) { self.thread = thread }

    /// Whether the caller runs on this thread.
    public var isCurrentThread: Bool { thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }

    /// Waits for the thread to end (a second call returns at once).
    public func join() {
        guard let t = thread else { return }
        thread = nil
        pthread_join(t, nil)
    }
}

/// Names the calling thread (Linux keeps 15 bytes). Glibc's pthread_setname_np and
/// prctl are not visible to Swift, so the name goes through /proc like `prctl` would.
private func setCurrentThreadName(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { b in retryingInterrupted { write(fd, b.baseAddress, b.count) } }
}
