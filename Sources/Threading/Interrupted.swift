import Glibc

/// Calls `call` again while it fails with EINTR (a signal arrived): the one place the
/// retry on interrupted system calls is written. Returns the final result; `errno`
/// still holds the error of a final failure.
@inline(__always)
public func retryingInterrupted<T: FixedWidthInteger & SignedInteger>(_ call: () -> T) -> T {
    while true {
        let r = call()
        if r == -1 && errno == EINTR { continue }
        return r
    }
}
