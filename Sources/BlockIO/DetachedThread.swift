import Glibc

/// Starts `body` on a new detached OS thread (for long-lived loops: servers, the
/// background download). Returns false if the thread could not be created.
@discardableResult
public func startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Bool {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body))
    var t = pthread_t()
    let rc = pthread_create(&t, nil, { arg in
        let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        b.body()
        return nil
    }, box.toOpaque())
    if rc != 0 {
        box.release()
        return false
    }
    pthread_detach(t)
    return true
}
