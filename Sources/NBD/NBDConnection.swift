import BlockIO
import Glibc
import Synchronization
import Threading

/// One client connection: fixed-newstyle negotiation, then transmission. The reader
/// (this connection's thread) parses requests; I/O runs on the shared worker pool and
/// replies go out as each finishes, so they may be out of order.
final class NBDConnection: @unchecked Sendable {
    let stream: SocketStream
    let export: NBDExport
    let pool: WorkerPool
    let log: @Sendable (String) -> Void
    private let writeLock = Mutex(())
    private let inFlight = InFlightLimit(limit: 64)
    private let buffers = BufferPool()

    /// Called once the connection's requests are done, just before its socket is closed.
    private let willClose: (@Sendable () -> Void)?

    init(fd: Int32, export: NBDExport, pool: WorkerPool, log: @escaping @Sendable (String) -> Void,
         willClose: (@Sendable () -> Void)? = nil) {
        stream = SocketStream(fd: fd)
        self.export = export
        self.pool = pool
        self.log = log
        self.willClose = willClose
    }

    /// Runs the connection to its end and closes the socket.
    func run() {
        defer {
            inFlight.waitForAll()
            willClose?()
            close(stream.fd)
        }
        do {
            guard try negotiate() else { return }
            try transmit()
        } catch SocketStream.Failure.closed {
            // Peer went away.
        } catch {
            log("nbd: connection error: \(error)")
        }
    }

    // MARK: negotiation

    /// Returns true when the client entered transmission.
    private func negotiate() throws -> Bool {
        var hello = WireBuilder()
        hello.u64(NBDProtocol.initMagic)
        hello.u64(NBDProtocol.optionMagic)
        hello.u16(NBDProtocol.flagFixedNewstyle | NBDProtocol.flagNoZeroes)
        try stream.write(hello.bytes)
        let clientFlags = try stream.readU32()
        guard clientFlags & ~(NBDProtocol.clientFixedNewstyle | NBDProtocol.clientNoZeroes) == 0 else {
            log("nbd: client sent unknown flags 0x\(String(clientFlags, radix: 16)); closing")
            return false
        }
        let noZeroes = clientFlags & NBDProtocol.clientNoZeroes != 0
        while true {
            guard try stream.readU64() == NBDProtocol.optionMagic else {
                log("nbd: bad option magic; closing")
                return false
            }
            let option = try stream.readU32()
            let length = try stream.readU32()
            guard length <= UInt32(NBDProtocol.maxOptionLength) else {
                log("nbd: option \(option) of \(length) bytes is too large; closing")
                return false
            }
            let data = try stream.readBytes(Int(length))
            switch option {
            case NBDProtocol.optExportName:
                let name = String(decoding: data, as: UTF8.self)
                guard export.matches(name) else {
                    log("nbd: unknown export '\(name)'; closing")
                    return false
                }
                var b = WireBuilder()
                b.u64(export.file.size)
                b.u16(export.transmissionFlags)
                if !noZeroes { b.raw([UInt8](repeating: 0, count: 124)) }
                try stream.write(b.bytes)
                return true
            case NBDProtocol.optAbort:
                try reply(option, NBDProtocol.repAck)
                return false
            case NBDProtocol.optList:
                guard length == 0 else { try reply(option, NBDProtocol.repErrInvalid); continue }
                var b = WireBuilder()
                b.u32(UInt32(export.name.utf8.count))
                b.raw(Array(export.name.utf8))
                try reply(option, NBDProtocol.repServer, b.bytes)
                try reply(option, NBDProtocol.repAck)
            case NBDProtocol.optInfo, NBDProtocol.optGo:
                if try infoOrGo(option, data) && option == NBDProtocol.optGo { return true }
            default:
                try reply(option, NBDProtocol.repErrUnsupported)
            }
        }
    }

    /// Handles NBD_OPT_INFO / NBD_OPT_GO; returns true if the export was granted.
    private func infoOrGo(_ option: UInt32, _ data: [UInt8]) throws -> Bool {
        func be16(_ o: Int) -> UInt16 { UInt16(data[o]) << 8 | UInt16(data[o + 1]) }
        guard data.count >= 6 else { try reply(option, NBDProtocol.repErrInvalid); return false }
        let nameLength = Int(UInt32(data[0]) << 24 | UInt32(data[1]) << 16 | UInt32(data[2]) << 8 | UInt32(data[3]))
        guard nameLength <= data.count - 6 else { try reply(option, NBDProtocol.repErrInvalid); return false }
        let name = String(decoding: data[4..<(4 + nameLength)], as: UTF8.self)
        let count = Int(be16(4 + nameLength))
        guard data.count == 6 + nameLength + 2 * count else { try reply(option, NBDProtocol.repErrInvalid); return false }
        let requests = (0..<count).map { be16(6 + nameLength + 2 * $0) }
        guard export.matches(name) else { try reply(option, NBDProtocol.repErrUnknown); return false }
        var info = WireBuilder()
        info.u16(NBDProtocol.infoExport)
        info.u64(export.file.size)
        info.u16(export.transmissionFlags)
        try reply(option, NBDProtocol.repInfo, info.bytes)
        if requests.contains(NBDProtocol.infoBlockSize) {
            var b = WireBuilder()
            b.u16(NBDProtocol.infoBlockSize)
            b.u32(512)
            b.u32(4096)
            b.u32(UInt32(NBDProtocol.maxPayload))
            try reply(option, NBDProtocol.repInfo, b.bytes)
        }
        if requests.contains(NBDProtocol.infoName) {
            var b = WireBuilder()
            b.u16(NBDProtocol.infoName)
            b.raw(Array(export.name.utf8))
            try reply(option, NBDProtocol.repInfo, b.bytes)
        }
        if requests.contains(NBDProtocol.infoDescription) {
            var b = WireBuilder()
            b.u16(NBDProtocol.infoDescription)
            b.raw(Array(export.description.utf8))
            try reply(option, NBDProtocol.repInfo, b.bytes)
        }
        try reply(option, NBDProtocol.repAck)
        return true
    }

    private func reply(_ option: UInt32, _ type: UInt32, _ data: [UInt8] = []) throws {
        var b = WireBuilder()
        b.u64(NBDProtocol.optionReplyMagic)
        b.u32(option)
        b.u32(type)
        b.u32(UInt32(data.count))
        b.raw(data)
        try stream.write(b.bytes)
    }

    // MARK: transmission

    private func transmit() throws {
        let input = InputBuffer(stream: stream, capacity: 256 * 1024)
        let output = OutputBuffer(capacity: 2 << 20)
        let size = export.file.size
        defer { flushOutput(output) }
        while true {
            if input.available < 28 {
                // Nothing more queued by the client: send what is ready before waiting.
                flushOutput(output)
                try input.fill(atLeast: 28)
            }
            let header = input.peek(28)
            func be<T: FixedWidthInteger>(_ o: Int, _: T.Type) -> T { T(bigEndian: header.loadUnaligned(fromByteOffset: o, as: T.self)) }
            guard be(0, UInt32.self) == NBDProtocol.requestMagic else {
                log("nbd: bad request magic; closing")
                return
            }
            let flags = be(4, UInt16.self)
            let type = be(6, UInt16.self)
            let handle = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self) // echoed as sent
            let offset = be(16, UInt64.self)
            let length = be(24, UInt32.self)
            input.consume(28)
            let inRange = offset <= size && UInt64(length) <= size - offset

            switch type {
            case NBDProtocol.cmdDisconnect:
                return
            case NBDProtocol.cmdRead:
                guard Int(length) <= NBDProtocol.maxPayload else { queueReply(output, handle, NBDProtocol.eOverflow); continue }
                guard inRange else { queueReply(output, handle, NBDProtocol.eInval); continue }
                if export.inlineReads && Int(length) <= NBDConnection.inlineReadLimit {
                    // Cheap local read: serve it on this thread straight into the reply
                    // batch; no hand-off, and one send for many replies.
                    if output.free < 16 + Int(length) { flushOutput(output) }
                    let slot = output.reserve(16 + Int(length))
                    let status = readPayload(into: UnsafeMutableRawBufferPointer(rebasing: slot[16...]), at: offset)
                    fillReplyHeader(slot, handle: handle, error: status)
                    output.commit(status == 0 ? 16 + Int(length) : 16)
                    continue
                }
                let buf = buffers.take(16 + Int(length))
                onPool { [self] in
                    let status = readPayload(into: UnsafeMutableRawBufferPointer(rebasing: buf[16..<(16 + Int(length))]), at: offset)
                    fillReplyHeader(buf, handle: handle, error: status)
                    send(UnsafeRawBufferPointer(rebasing: buf[0..<(status == 0 ? 16 + Int(length) : 16)]))
                    buffers.give(buf)
                }
            case NBDProtocol.cmdWrite:
                guard Int(length) <= NBDProtocol.maxPayload else {
                    // The payload cannot be skipped safely: refuse and close.
                    queueReply(output, handle, NBDProtocol.eOverflow)
                    log("nbd: write of \(length) bytes exceeds \(NBDProtocol.maxPayload); closing")
                    return
                }
                let buf = buffers.take(16 + Int(length))
                try input.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[16..<(16 + Int(length))]))
                if let e = writeCheck(offset, UInt64(length), inRange, aligned: true) {
                    buffers.give(buf)
                    queueReply(output, handle, e)
                    continue
                }
                submitReplying(handle, "write at \(offset)+\(length)") { [self] in
                    defer { buffers.give(buf) }
                    try export.file.write(UnsafeRawBufferPointer(rebasing: buf[16..<(16 + Int(length))]), at: offset)
                    if flags & NBDProtocol.cmdFlagFUA != 0 { try export.file.flush() }
                }
            case NBDProtocol.cmdFlush:
                submitReplying(handle, "flush") { [self] in try export.file.flush() }
            case NBDProtocol.cmdTrim, NBDProtocol.cmdWriteZeroes:
                if let e = writeCheck(offset, UInt64(length), inRange, aligned: type == NBDProtocol.cmdWriteZeroes) {
                    queueReply(output, handle, e)
                    continue
                }
                submitReplying(handle, "\(type == NBDProtocol.cmdTrim ? "trim" : "write zeroes") at \(offset)+\(length)") { [self] in
                    if type == NBDProtocol.cmdTrim {
                        // Trim is advisory: shrink to whole sectors.
                        let lo = (offset + 511) / 512 * 512
                        let hi = (offset + UInt64(length)) / 512 * 512
                        if hi > lo { try export.file.discard(offset: lo, length: hi - lo) }
                    } else {
                        try export.file.writeZeroes(offset: offset, length: UInt64(length))
                    }
                    if flags & NBDProtocol.cmdFlagFUA != 0 { try export.file.flush() }
                }
            default:
                queueReply(output, handle, NBDProtocol.eInval)
            }
        }
    }

    /// Runs `body` on the worker pool, then sends a payload-less reply: success, or EIO
    /// (logged with `what`) if it throws.
    private func submitReplying(_ handle: UInt64, _ what: @autoclosure @escaping () -> String,
                                _ body: @escaping () throws -> Void) {
        onPool { [self] in
            var status: UInt32 = 0
            do { try body() } catch {
                log("nbd: \(what()) failed: \(error)")
                status = NBDProtocol.eIO
            }
            sendError(handle, status)
        }
    }

    /// Runs `job` on the worker pool, counted in flight; once the pool is shutting down
    /// (the server stops), on this thread instead, so the request is still answered.
    private func onPool(_ job: @escaping () -> Void) {
        inFlight.enter()
        let counted = { [inFlight] in
            job()
            inFlight.leave()
        }
        do { try pool.submit(counted) } catch { counted() }
    }

    /// Fills a read reply's payload; returns the NBD error (0 on success).
    private func readPayload(into payload: UnsafeMutableRawBufferPointer, at offset: UInt64) -> UInt32 {
        do {
            let n = try export.file.read(into: payload, at: offset)
            return n < payload.count ? NBDProtocol.eIO : 0
        } catch {
            log("nbd: read at \(offset)+\(payload.count) failed: \(error)")
            return NBDProtocol.eIO
        }
    }

    /// Reads up to this size are served on the connection's thread when the export allows.
    static let inlineReadLimit = 256 * 1024

    /// Adds a payload-less reply to the batch.
    private func queueReply(_ output: OutputBuffer, _ handle: UInt64, _ error: UInt32) {
        if output.free < 16 { flushOutput(output) }
        let slot = output.reserve(16)
        fillReplyHeader(slot, handle: handle, error: error)
        output.commit(16)
    }

    /// Sends the batched replies.
    private func flushOutput(_ output: OutputBuffer) {
        guard output.count > 0 else { return }
        send(output.bytes)
        output.reset()
    }

    /// The error for a write-like request, or nil if it may go ahead.
    private func writeCheck(_ offset: UInt64, _ length: UInt64, _ inRange: Bool, aligned: Bool) -> UInt32? {
        if export.readOnly { return NBDProtocol.ePerm }
        if !inRange { return NBDProtocol.eNoSpc }
        if aligned && (offset % 512 != 0 || length % 512 != 0) { return NBDProtocol.eInval }
        return nil
    }

    private func fillReplyHeader(_ buf: UnsafeMutableRawBufferPointer, handle: UInt64, error: UInt32) {
        buf.storeBytes(of: NBDProtocol.simpleReplyMagic.bigEndian, toByteOffset: 0, as: UInt32.self)
        buf.storeBytes(of: error.bigEndian, toByteOffset: 4, as: UInt32.self)
        buf.storeBytes(of: handle, toByteOffset: 8, as: UInt64.self)
    }

    private func sendError(_ handle: UInt64, _ error: UInt32) {
        var b = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &b) { raw in
            fillReplyHeader(raw, handle: handle, error: error)
            send(UnsafeRawBufferPointer(raw))
        }
    }

    private func send(_ bytes: UnsafeRawBufferPointer) {
        writeLock.withLock { _ in
            do { try stream.writeAll(bytes) } catch {
                // The reader notices the broken socket and ends the connection.
                shutdown(stream.fd, Int32(SHUT_RDWR))
            }
        }
    }
}

/// Reuses request buffers (up to 1 MiB of payload) so steady traffic allocates nothing.
final class BufferPool: Sendable {
    private let free = ConditionLock<[UnsafeMutableRawBufferPointer]>([])
    static let reusable = 16 + (1 << 20)

    func take(_ size: Int) -> UnsafeMutableRawBufferPointer {
        if size <= BufferPool.reusable {
            let b = free.withLock { $0.popLast() }
            return b ?? .allocate(byteCount: BufferPool.reusable, alignment: 4096)
        }
        return .allocate(byteCount: size, alignment: 4096)
    }

    func give(_ b: UnsafeMutableRawBufferPointer) {
        if b.count == BufferPool.reusable {
            let kept = free.withLock { f -> Bool in
                guard f.count < 128 else { return false }
                f.append(b)
                return true
            }
            if kept { return }
        }
        b.deallocate()
    }

    deinit {
        free.withLock { $0.forEach { $0.deallocate() } }
    }
}

/// Buffered reads of the request stream: many small requests per system call.
final class InputBuffer {
    let stream: SocketStream
    private let storage: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0

    init(stream: SocketStream, capacity: Int) {
        self.stream = stream
        storage = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { storage.deallocate() }

    var available: Int { end - start }

    /// Waits until at least `n` (<= capacity) bytes are buffered.
    func fill(atLeast n: Int) throws {
        if start > 0 && storage.count - start < n {
            let len = end - start
            if len > 0 { storage.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: len) }
            start = 0
            end = len
        }
        while end - start < n {
            let got = retryingInterrupted { recv(stream.fd, storage.baseAddress! + end, storage.count - end, 0) }
            if got == 0 { throw SocketStream.Failure.closed }
            if got < 0 { throw SocketStream.Failure.error(errno) }
            end += got
        }
    }

    func peek(_ n: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[start..<(start + n)]) }

    func consume(_ n: Int) {
        start += n
        if start == end { start = 0; end = 0 }
    }

    /// Fills `dst` from the buffer, then straight from the socket.
    func read(into dst: UnsafeMutableRawBufferPointer) throws {
        let n = min(available, dst.count)
        if n > 0 {
            dst.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: n)
            consume(n)
        }
        if n < dst.count { try stream.readExactly(UnsafeMutableRawBufferPointer(rebasing: dst[n...])) }
    }
}

/// Replies batched by the connection's thread, sent with one system call.
final class OutputBuffer {
    private let storage: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    init(capacity: Int) { storage = .allocate(byteCount: capacity, alignment: 64) }
    deinit { storage.deallocate() }

    var free: Int { storage.count - count }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[0..<count]) }

    /// Space for `n` bytes (call `commit` with how many were used). Requires `n <= free`.
    func reserve(_ n: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + n)])
    }

    func commit(_ n: Int) { count += n }
    func reset() { count = 0 }
}
