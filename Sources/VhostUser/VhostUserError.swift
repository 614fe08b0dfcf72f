import Glibc

/// Errors of the vhost-user backend. Protocol errors end the connection; ring errors
/// stop one queue; request errors become a virtio-blk status byte.
public enum VhostUserError: Error, CustomStringConvertible, Equatable {
    /// The socket set-up failed (bind, listen, path too long).
    case socket(String)
    /// The peer closed the connection.
    case closed
    /// A system call on the connection failed.
    case system(operation: String, errno: Int32)
    /// A message broke the protocol: the connection is closed.
    case malformed(request: UInt32, reason: String)
    /// A well-formed request that cannot be carried out (bad queue state, address
    /// outside the memory table): nacked when the front-end asked for a reply.
    case refused(request: UInt32, reason: String)
    /// A virtqueue holds something no correct driver writes (loop, address outside
    /// guest memory, bad index): the queue stops.
    case ring(queue: Int, reason: String)

    public var description: String {
        switch self {
        case let .socket(s): return s
        case .closed: return "vhost-user: the front-end closed the connection"
        case let .system(op, e): return "vhost-user: \(op) failed: \(String(cString: strerror(e)))"
        case let .malformed(r, why): return "vhost-user: malformed \(VhostUserRequest.name(r)): \(why)"
        case let .refused(r, why): return "vhost-user: \(VhostUserRequest.name(r)) refused: \(why)"
        case let .ring(q, why): return "vhost-user: queue \(q): \(why)"
        }
    }
}
