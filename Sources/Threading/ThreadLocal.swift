import Glibc

/// A value per thread, made on first use by `make` and released when the thread exits.
///
/// Used for decoder contexts and scratch buffers on read paths that must not lock or
/// allocate per call.
public final class ThreadLocal<Value: AnyObject>: @unchecked Sendable {
    private var key = pthread_key_t()
    private let make: @Sendable () -> Value

    public init(_ make: @escaping @Sendable () -> Value) {
        self.make = make
        pthread_key_create(&key) { ptr in
            if let ptr { Unmanaged<AnyObject>.fromOpaque(ptr).release() }
        }
    }

    deinit { pthread_key_delete(key) }

    /// This thread's value.
    @inline(__always)
    public var value: Value {
        if let p = pthread_getspecific(key) {
            return unsafeDowncast(Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue(), to: Value.self)
        }
        let v = make()
        pthread_setspecific(key, Unmanaged.passRetained(v as AnyObject).toOpaque())
        return v
    }
}

/// A growable, page-aligned byte buffer owned by one thread at a time.
public final class ScratchBuffer {
    public private(set) var buffer: UnsafeMutableRawBufferPointer

    public init(capacity: Int = 64 * 1024) {
        buffer = .allocate(byteCount: max(capacity, 4096), alignment: 4096)
    }

    deinit { buffer.deallocate() }

    /// The buffer, grown to at least `capacity` bytes (old content is not kept).
    @inline(__always)
    public func reserve(_ capacity: Int) -> UnsafeMutableRawBufferPointer {
        if buffer.count < capacity {
            buffer.deallocate()
            buffer = .allocate(byteCount: capacity, alignment: 4096)
        }
        return buffer
    }
}
