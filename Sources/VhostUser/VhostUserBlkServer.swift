import BlockIO
import Glibc
import Synchronization
import Threading

/// A vhost-user-blk back-end for one disk: listens on a unix socket, serves one
/// front-end (QEMU, Cloud Hypervisor, ...) at a time, and after it disconnects waits
/// for the next one, so a restarted or reconnecting VMM gets the disk back.
public final class VhostUserBlkServer: @unchecked Sendable {
    public let disk: VirtioBlkDisk
    public let socketPath: String
    public let queues: Int
    private let log: @Sendable (String) -> Void
    private var listenFD: Int32 = -1
    private var acceptThread: JoinHandle?
    private let state = Mutex<(connection: Int32, stopping: Bool, sessions: Int)>((-1, false, 0))

    /// - Parameters:
    ///   - file: the disk's contents; any `BlockFile`.
    ///   - readOnly: advertise VIRTIO_BLK_F_RO and fail writes (also when `file` is read-only).
    ///   - queues: request queues offered (1 to 64), each served by its own thread.
    ///   - serial: the GET_ID answer (up to 20 bytes).
    public init(file: any BlockFile, socketPath: String, readOnly: Bool, queues: Int = 1, serial: String = "obd",
                log: @escaping @Sendable (String) -> Void = { _ in }) throws(VhostUserError) {
        guard (1...VhostUserLimits.maxQueues).contains(queues) else {
            throw .socket("vhost-user: \(queues) queues; 1 to \(VhostUserLimits.maxQueues) are allowed")
        }
        disk = VirtioBlkDisk(file: file, readOnly: readOnly, serial: serial)
        self.socketPath = socketPath
        self.queues = queues
        self.log = log
    }

    /// Front-end connections served so far (finished or running).
    public var sessionsServed: Int { state.withLock { $0.sessions } }

    /// Binds the socket (replacing a stale socket file) and starts accepting.
    public func start() throws(VhostUserError) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .socket("socket: \(BlockIOError.text(errno))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw .socket("\(socketPath): socket path is too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        var st = stat()
        if lstat(socketPath, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(socketPath) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, listen(fd, 4) == 0 else {
            let e = errno
            close(fd)
            throw .socket("\(socketPath): bind/listen: \(BlockIOError.text(e))")
        }
        listenFD = fd
        do {
            acceptThread = try NamedThread.spawn(name: "obd-vhost-accept") { [self] in acceptLoop() }
        } catch {
            close(fd)
            listenFD = -1
            throw .socket("vhost-user: \(error)")
        }
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let go = state.withLock { s -> Bool in
                guard !s.stopping else { return false }
                s.connection = fd
                s.sessions += 1
                return true
            }
            guard go else { close(fd); return }
            log("vhost-user: \(socketPath): front-end connected")
            let session = VhostUserSession(fd: fd, disk: disk, queues: queues, log: log)
            let why = session.run()
            state.withLock { $0.connection = -1 }
            close(fd)
            log("vhost-user: \(socketPath): front-end disconnected (\(why == .closed ? "closed" : "\(why)"))")
        }
    }

    /// Stops accepting, ends the current connection (its queues stop, the disk is
    /// flushed) and removes the socket file.
    public func stop() {
        // Under the lock: the accept loop clears `connection` under it before closing the
        // socket, so the descriptor shut down here is never one reused by someone else.
        state.withLock { s in
            s.stopping = true
            if s.connection >= 0 { shutdown(s.connection, Int32(SHUT_RDWR)) }
        }
        if listenFD >= 0 { shutdown(listenFD, Int32(SHUT_RDWR)) }
        acceptThread?.join()
        acceptThread = nil
        if listenFD >= 0 { close(listenFD); listenFD = -1; unlink(socketPath) }
    }

    deinit { stop() }
}
