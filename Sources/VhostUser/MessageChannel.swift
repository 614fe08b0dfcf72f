import Glibc
import Threading

/// One vhost-user connection's byte stream: whole messages in and out of a unix socket,
/// with file descriptors as SCM_RIGHTS ancillary data.
public struct MessageChannel: Sendable {
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// Space for a control message carrying `count` descriptors (CMSG_SPACE).
    static func controlSpace(fds count: Int) -> Int {
        MemoryLayout<cmsghdr>.size + ((count * MemoryLayout<Int32>.size + 7) & ~7)
    }

    /// Receives one request: the header (with any descriptors), then its payload, then
    /// decodes and validates it. On any error every received descriptor is closed.
    public func receive() throws(VhostUserError) -> (VhostUserHeader, VhostUserMessage) {
        var head = [UInt8](repeating: 0, count: VhostUserHeader.size)
        let fds = try typed { try head.withUnsafeMutableBytes { try receiveWithFDs($0) } }
        do {
            let header = try typed { try head.withUnsafeBytes { try VhostUserHeader.parse($0) } }
            var payload = [UInt8](repeating: 0, count: Int(header.size))
            try typed { try payload.withUnsafeMutableBytes { try readExactly($0) } }
            let msg = try typed { try payload.withUnsafeBytes { try VhostUserMessage.decode(header, payload: $0, fds: fds) } }
            return (header, msg)
        } catch {
            for f in fds { close(f) }
            throw error
        }
    }

    /// Reads exactly `buf.count` bytes, collecting descriptors attached to them.
    private func receiveWithFDs(_ buf: UnsafeMutableRawBufferPointer) throws(VhostUserError) -> [Int32] {
        var fds: [Int32] = []
        var done = 0
        let space = Self.controlSpace(fds: VhostUserLimits.maxFDs)
        let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: 8)
        defer { control.deallocate() }
        while done < buf.count {
            var iov = iovec(iov_base: buf.baseAddress! + done, iov_len: buf.count - done)
            var msg = msghdr()
            let n = withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                msg.msg_iov = iovp
                msg.msg_iovlen = 1
                msg.msg_control = control
                msg.msg_controllen = space
                return retryingInterrupted { recvmsg(fd, &msg, Int32(MSG_CMSG_CLOEXEC)) }
            }
            if n < 0 { let e = errno; for f in fds { close(f) }; throw .system(operation: "recvmsg", errno: e) }
            fds += Self.descriptors(in: control, length: Int(msg.msg_controllen))
            if msg.msg_flags & Int32(MSG_CTRUNC) != 0 {
                for f in fds { close(f) }
                throw .malformed(request: 0, reason: "more than \(VhostUserLimits.maxFDs) file descriptors")
            }
            if n == 0 {
                for f in fds { close(f) }
                if done == 0 { throw .closed }
                throw .malformed(request: 0, reason: "connection closed inside a header")
            }
            done += n
        }
        if fds.count > VhostUserLimits.maxFDs {
            for f in fds { close(f) }
            throw .malformed(request: 0, reason: "\(fds.count) file descriptors, at most \(VhostUserLimits.maxFDs)")
        }
        return fds
    }

    /// The SCM_RIGHTS descriptors in a received control buffer.
    static func descriptors(in control: UnsafeMutableRawPointer, length: Int) -> [Int32] {
        var out: [Int32] = []
        var at = 0
        let hdr = MemoryLayout<cmsghdr>.size
        while at + hdr <= length {
            let c = control.load(fromByteOffset: at, as: cmsghdr.self)
            let len = Int(c.cmsg_len)
            guard len >= hdr, at + len <= length else { break }
            if c.cmsg_level == SOL_SOCKET && c.cmsg_type == Int32(SCM_RIGHTS) {
                let n = (len - hdr) / MemoryLayout<Int32>.size
                for i in 0..<n { out.append(control.loadUnaligned(fromByteOffset: at + hdr + 4 * i, as: Int32.self)) }
            }
            at += (len + 7) & ~7
        }
        return out
    }

    private func readExactly(_ buf: UnsafeMutableRawBufferPointer) throws(VhostUserError) {
        var done = 0
        while done < buf.count {
            let n = retryingInterrupted { recv(fd, buf.baseAddress! + done, buf.count - done, 0) }
            if n < 0 { throw .system(operation: "recv", errno: errno) }
            if n == 0 { throw .malformed(request: 0, reason: "connection closed inside a payload") }
            done += n
        }
    }

    /// Sends `bytes` (a whole message) with `fds` attached.
    public func send(_ bytes: [UInt8], fds: [Int32] = []) throws(VhostUserError) {
        let space = fds.isEmpty ? 0 : Self.controlSpace(fds: fds.count)
        let control = UnsafeMutableRawPointer.allocate(byteCount: max(space, 8), alignment: 8)
        defer { control.deallocate() }
        if !fds.isEmpty {
            control.initializeMemory(as: UInt8.self, repeating: 0, count: space)
            var c = cmsghdr()
            c.cmsg_len = MemoryLayout<cmsghdr>.size + 4 * fds.count
            c.cmsg_level = SOL_SOCKET
            c.cmsg_type = Int32(SCM_RIGHTS)
            control.storeBytes(of: c, as: cmsghdr.self)
            for (i, f) in fds.enumerated() { control.storeBytes(of: f, toByteOffset: MemoryLayout<cmsghdr>.size + 4 * i, as: Int32.self) }
        }
        var done = 0
        try typed { try bytes.withUnsafeBytes { (buf: UnsafeRawBufferPointer) throws in
            while done < buf.count || (done == 0 && buf.count == 0) {
                var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: buf.baseAddress! + done), iov_len: buf.count - done)
                var msg = msghdr()
                let withFDs = done == 0 && !fds.isEmpty
                let n = withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    if withFDs {
                        msg.msg_control = control
                        msg.msg_controllen = space
                    }
                    return retryingInterrupted { sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) }
                }
                if n < 0 { throw VhostUserError.system(operation: "sendmsg", errno: errno) }
                done += n
                if buf.count == 0 { break }
            }
        } }
    }

    /// Sends a reply to `request` with `payload`.
    public func reply(to request: UInt32, payload: [UInt8], fds: [Int32] = []) throws(VhostUserError) {
        let h = VhostUserHeader(request: request, flags: VhostUserFlags.version | VhostUserFlags.reply, size: UInt32(payload.count))
        try send(h.bytes + payload, fds: fds)
    }
}

/// Runs `body`, whose errors are all `VhostUserError` (closures lose the typed throw).
@inline(__always)
func typed<T>(_ body: () throws -> T) throws(VhostUserError) -> T {
    do { return try body() } catch let e as VhostUserError { throw e } catch {
        throw .malformed(request: 0, reason: "\(error)")
    }
}

/// Little-endian encoding of protocol payloads.
struct PayloadWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
}
