import CAIO
import Glibc
import Threading

/// A read-only local file read with Linux native AIO (libaio) and O_DIRECT, bypassing
/// the page cache: overlaybd's `ioEngine: 1`. Reads are aligned to 4 KiB through a
/// per-thread bounce buffer; a large read is split into chunks submitted together.
public final class AIOFile: BlockFile, @unchecked Sendable {
    public static let alignment = 4096
    static let chunk = 1 << 20

    public let path: String
    public let fd: Int32
    public let size: UInt64
    public var name: String { path }

    private final class Context {
        var ctx: io_context_t?
        let bounce: UnsafeMutableRawBufferPointer
        init() {
            bounce = .allocate(byteCount: 8 << 20, alignment: AIOFile.alignment)
            if io_setup(64, &ctx) != 0 { ctx = nil }
        }
        deinit {
            if let ctx { io_destroy(ctx) }
            bounce.deallocate()
        }
    }

    private static let contexts = ThreadLocal { Context() }

    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC | LinuxFile.direct)
        if fd < 0 { throw BlockIOError.open(path: path, errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw BlockIOError.open(path: path, errno: e)
        }
        self.path = path
        self.fd = fd
        size = UInt64(st.st_size)
    }

    deinit { close(fd) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), size - offset))
        let c = AIOFile.contexts.value
        guard let ctx = c.ctx else { throw BlockIOError.io(name: path, operation: "io_setup", offset: offset, errno: EAGAIN) }
        let a = UInt64(AIOFile.alignment)
        var done = 0
        while done < count {
            // One batch: up to the bounce buffer's size, in chunks submitted together.
            let start = offset + UInt64(done)
            let alignedStart = start / a * a
            let want = min(count - done, c.bounce.count - Int(start - alignedStart) - AIOFile.alignment)
            let alignedEnd = (start + UInt64(want) + a - 1) / a * a
            let total = Int(alignedEnd - alignedStart)
            let pieces = (total + AIOFile.chunk - 1) / AIOFile.chunk
            var iocbs = [iocb](repeating: iocb(), count: pieces)
            var got = 0
            try iocbs.withUnsafeMutableBufferPointer { cbs in
                var ptrs = (0..<pieces).map { Optional(cbs.baseAddress! + $0) }
                for i in 0..<pieces {
                    let len = min(AIOFile.chunk, total - i * AIOFile.chunk)
                    io_prep_pread(cbs.baseAddress! + i, fd, c.bounce.baseAddress! + i * AIOFile.chunk, len,
                                  Int64(alignedStart) + Int64(i * AIOFile.chunk))
                }
                let rc = ptrs.withUnsafeMutableBufferPointer { io_submit(ctx, pieces, $0.baseAddress) }
                guard rc == pieces else {
                    throw BlockIOError.io(name: path, operation: "io_submit", offset: alignedStart, errno: rc < 0 ? -rc : EAGAIN)
                }
                var events = [io_event](repeating: io_event(), count: pieces)
                var reaped = 0
                var bytes = [Int](repeating: 0, count: pieces)
                while reaped < pieces {
                    let n = events.withUnsafeMutableBufferPointer { io_getevents(ctx, 1, pieces - reaped, $0.baseAddress, nil) }
                    if n < 0 {
                        if n == -EINTR { continue }
                        throw BlockIOError.io(name: path, operation: "io_getevents", offset: alignedStart, errno: -n)
                    }
                    for e in events.prefix(Int(n)) {
                        let index = cbs.baseAddress!.distance(to: e.obj)
                        let res = Int(bitPattern: UInt(e.res))
                        if res < 0 { throw BlockIOError.io(name: path, operation: "read (aio)", offset: alignedStart, errno: Int32(-res)) }
                        bytes[index] = res
                    }
                    reaped += Int(n)
                }
                // Bytes available from the start of the batch (stop at the first short piece).
                for (i, b) in bytes.enumerated() {
                    got += b
                    if b < min(AIOFile.chunk, total - i * AIOFile.chunk) { break }
                }
                ptrs.removeAll()
            }
            let skip = Int(start - alignedStart)
            let usable = min(want, max(0, got - skip))
            if usable > 0 {
                (buffer.baseAddress! + done).copyMemory(from: c.bounce.baseAddress! + skip, byteCount: usable)
            }
            done += usable
            if usable < want { break }
        }
        return done
    }
}
