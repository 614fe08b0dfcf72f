import BlockIO
import Glibc
import Threading

/// Errors of the NBD server's set-up.
public enum NBDError: Error, CustomStringConvertible {
    case socket(String)
    public var description: String {
        switch self { case let .socket(s): return s }
    }
}

/// An NBD server (fixed newstyle) exporting one block file on a unix socket or TCP,
/// to any number of connections.
public final class NBDServer: @unchecked Sendable {
    public let export: NBDExport
    private let pool: WorkerPool
    private let log: @Sendable (String) -> Void
    private var listenFD: Int32 = -1
    /// What the server listens on, for messages ("unix:/path" or "tcp:host:port").
    public private(set) var address = ""

    /// Whether `shutdown()` also stops the pool (it was made for this server).
    private let ownsPool: Bool
    /// Sockets of the connections being served, for `shutdown()`; an entry leaves before
    /// its socket is closed, so a number here is never a reused descriptor.
    private let connections = ConditionLock<Set<Int32>>([])
    private var acceptThread: JoinHandle?

    public init(export: NBDExport, workers: Int = 8, log: @escaping @Sendable (String) -> Void) {
        self.export = export
        pool = WorkerPool(threads: workers, capacity: 256, name: "obd-nbd")
        ownsPool = true
        self.log = log
    }

    /// A server whose I/O runs on `pool`, shared with other servers (a host daemon's one
    /// pool for all its disks); `shutdown()` leaves the pool running.
    public init(export: NBDExport, pool: WorkerPool, log: @escaping @Sendable (String) -> Void) {
        self.export = export
        self.pool = pool
        ownsPool = false
        self.log = log
    }

    /// Binds a unix socket at `path` (an existing socket file is replaced).
    public func listen(unixPath path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NBDError.socket("socket: \(BlockIOError.text(errno))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw NBDError.socket("\(path): socket path is too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw NBDError.socket("\(path): bind: \(BlockIOError.text(e))")
        }
        try finishListen(fd, "unix:\(path)")
    }

    /// Binds TCP `host:port` (IPv4 or IPv6; port 0 picks a free one).
    public func listen(host: String, port: UInt16) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>?
        let gai = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &res)
        guard gai == 0, let info = res else {
            throw NBDError.socket("\(host):\(port): cannot resolve: \(String(cString: gai_strerror(gai)))")
        }
        defer { freeaddrinfo(res) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NBDError.socket("socket: \(BlockIOError.text(errno))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let e = errno
            close(fd)
            throw NBDError.socket("\(host):\(port): bind: \(BlockIOError.text(e))")
        }
        var bound = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let actualPort = withUnsafeBytes(of: bound) { raw -> UInt16 in
            UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        }
        try finishListen(fd, "tcp:\(host):\(actualPort)")
    }

    private func finishListen(_ fd: Int32, _ address: String) throws {
        guard Glibc.listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw NBDError.socket("\(address): listen: \(BlockIOError.text(e))")
        }
        listenFD = fd
        self.address = address
    }

    /// Accepts connections until `stop()`; each runs on its own thread.
    public func serve() {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            connections.withLock { _ = $0.insert(fd) }
            let conn = NBDConnection(fd: fd, export: export, pool: pool, log: log) { [connections] in
                connections.withLock { _ = $0.remove(fd) }
                connections.notifyAll()
            }
            do {
                try NamedThread.detach(name: "obd-nbd-conn") { conn.run() }
            } catch {
                log("nbd: refusing a connection: \(error)")
                connections.withLock { _ = $0.remove(fd) }
                close(fd)
            }
        }
    }

    /// Runs `serve()` on a thread of its own, which `shutdown()` joins.
    public func startServing() throws {
        acceptThread = try NamedThread.spawn(name: "obd-nbd-accept") { [self] in serve() }
    }

    /// Stops accepting (joining the thread of `startServing()`), ends every connection
    /// and waits up to `timeout` seconds for their requests to finish; then stops the
    /// pool if this server made it. Returns false if connections were still running at
    /// the deadline. Call once; not together with `stop()`.
    @discardableResult
    public func shutdown(timeout: Double = 30) -> Bool {
        if listenFD >= 0 { Glibc.shutdown(listenFD, Int32(SHUT_RDWR)) }
        acceptThread?.join()
        acceptThread = nil
        if listenFD >= 0 { close(listenFD); listenFD = -1 }
        connections.withLock { for fd in $0 { Glibc.shutdown(fd, Int32(SHUT_RDWR)) } }
        let drained = connections.withLock(when: { $0.isEmpty }, deadline: monotonicSeconds() + timeout) { _ in true } ?? false
        if ownsPool { pool.shutdown() }
        return drained
    }

    /// Stops accepting new connections.
    public func stop() {
        if listenFD >= 0 {
            Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
            close(listenFD)
            listenFD = -1
        }
    }
}
