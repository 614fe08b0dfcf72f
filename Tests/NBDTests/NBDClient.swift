import Glibc

/// A small NBD client for tests: speaks the protocol byte by byte so tests can also
/// send what a real client never would.
final class NBDClient {
    let fd: Int32
    var size: UInt64 = 0
    var flags: UInt16 = 0

    struct Closed: Error {}

    init(socketPath: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in socketPath.utf8.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { close(fd); throw Closed() }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ b: [UInt8]) { _ = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    func recvExactly(_ n: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var done = 0
        while done < n {
            let r = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, n - done, 0) }
            if r <= 0 { throw Closed() }
            done += r
        }
        return out
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    func isClosed() -> Bool {
        var b = [UInt8](repeating: 0, count: 1)
        let r = b.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 1, 0) }
        return r == 0 || (r < 0 && errno != EAGAIN)
    }

    static func be<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
    static func read<T: FixedWidthInteger>(_ b: [UInt8], _ o: Int, _: T.Type) -> T {
        b[o..<(o + MemoryLayout<T>.size)].reduce(T(0)) { $0 << 8 | T($1) }
    }

    /// Reads the server greeting and sends client flags.
    func hello(clientFlags: UInt32 = 3) throws {
        let g = try recvExactly(18)
        precondition(Self.read(g, 0, UInt64.self) == 0x4E42_444D_4147_4943)
        send(Self.be(clientFlags))
    }

    func option(_ opt: UInt32, _ data: [UInt8]) {
        send(Self.be(UInt64(0x4948_4156_454F_5054)) + Self.be(opt) + Self.be(UInt32(data.count)) + data)
    }

    /// Reads one option reply: (option, type, data).
    func optionReply() throws -> (UInt32, UInt32, [UInt8]) {
        let h = try recvExactly(20)
        precondition(Self.read(h, 0, UInt64.self) == 0x0003_E889_0455_65A9)
        let len = Int(Self.read(h, 16, UInt32.self))
        return (Self.read(h, 8, UInt32.self), Self.read(h, 12, UInt32.self), try recvExactly(len))
    }

    /// Negotiates with NBD_OPT_GO and enters transmission.
    func go(name: String = "") throws {
        try hello()
        option(7, Self.be(UInt32(name.utf8.count)) + Array(name.utf8) + Self.be(UInt16(1)) + Self.be(UInt16(3)))
        while true {
            let (_, type, data) = try optionReply()
            if type == 3 && Self.read(data, 0, UInt16.self) == 0 {
                size = Self.read(data, 2, UInt64.self)
                flags = Self.read(data, 10, UInt16.self)
            }
            if type == 1 { return }
            if type & 0x8000_0000 != 0 { throw Closed() }
        }
    }

    func request(_ type: UInt16, handle: UInt64, offset: UInt64, length: UInt32, flags: UInt16 = 0, payload: [UInt8] = [], magic: UInt32 = 0x2560_9513) {
        send(Self.be(magic) + Self.be(flags) + Self.be(type) + Self.be(handle) + Self.be(offset) + Self.be(length) + payload)
    }

    /// Reads a simple reply header: (error, handle).
    func reply() throws -> (UInt32, UInt64) {
        let h = try recvExactly(16)
        precondition(Self.read(h, 0, UInt32.self) == 0x6744_6698, "bad reply magic")
        return (Self.read(h, 4, UInt32.self), Self.read(h, 8, UInt64.self))
    }

    func read(_ offset: UInt64, _ length: UInt32, handle: UInt64 = 1) throws -> (UInt32, [UInt8]) {
        request(0, handle: handle, offset: offset, length: length)
        let (e, h) = try reply()
        precondition(h == handle)
        return (e, e == 0 ? try recvExactly(Int(length)) : [])
    }

    func write(_ offset: UInt64, _ data: [UInt8], flags: UInt16 = 0) throws -> UInt32 {
        request(1, handle: 2, offset: offset, length: UInt32(data.count), flags: flags, payload: data)
        return try reply().0
    }

    func simple(_ type: UInt16, _ offset: UInt64 = 0, _ length: UInt32 = 0) throws -> UInt32 {
        request(type, handle: 3, offset: offset, length: length)
        return try reply().0
    }
}
