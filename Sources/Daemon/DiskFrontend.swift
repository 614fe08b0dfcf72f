import BlockIO
import Glibc
import NBD
import Threading
import VhostUser

/// A disk's server: a vhost-user-blk back-end or an NBD server on a unix socket.
enum DiskFrontend: Sendable {
    case vhostUser(VhostUserBlkServer)
    case nbd(NBDServer, socket: String)

    /// Starts listening on the spec's socket.
    static func start(_ frontend: DiskSpec.Frontend, id: String, file: any BlockFile, readOnly: Bool, remoteReads: Bool,
                      pool: WorkerPool, log: @escaping @Sendable (String) -> Void) throws(DaemonError) -> DiskFrontend {
        switch frontend.type {
        case .vhostUser:
            do {
                let s = try VhostUserBlkServer(file: file, socketPath: frontend.socket, readOnly: readOnly,
                                               queues: frontend.queues ?? 1, serial: frontend.serial ?? String(id.prefix(20)), log: log)
                try s.start()
                return .vhostUser(s)
            } catch {
                throw .frontendFailed(socket: frontend.socket, detail: "\(error)")
            }
        case .nbd:
            let export = NBDExport(name: id, file: file, readOnly: readOnly, description: "obd disk \(id)", inlineReads: !remoteReads)
            let s = NBDServer(export: export, pool: pool, log: log)
            do {
                try s.listen(unixPath: frontend.socket)
                try s.startServing()
            } catch {
                _ = s.shutdown(timeout: 0)
                unlink(frontend.socket)
                throw .frontendFailed(socket: frontend.socket, detail: "\(error)")
            }
            return .nbd(s, socket: frontend.socket)
        }
    }

    /// Front-end sessions served (vhost-user), 0 for NBD.
    var sessions: Int {
        if case let .vhostUser(s) = self { return s.sessionsServed }
        return 0
    }

    /// Stops listening, ends the connections (waiting up to `timeout` s for NBD requests)
    /// and removes the socket file.
    func stop(timeout: Double) {
        switch self {
        case let .vhostUser(s):
            s.stop()
        case let .nbd(s, socket):
            _ = s.shutdown(timeout: timeout)
            unlink(socket)
        }
    }
}
