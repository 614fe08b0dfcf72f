/// Errors of the host daemon. Each has a stable `code` (the control API's `"code"`)
/// and the HTTP status it is answered with; `description` is the human sentence.
public enum DaemonError: Error, CustomStringConvertible, Equatable {
    /// The request body is not JSON, or not the JSON object expected.
    case badJSON(String)
    /// The request has a field the API does not know (never ignored silently).
    case unknownField(String)
    /// A field is missing or has a value out of its domain.
    case invalidField(field: String, detail: String)
    /// The image config (or the global config) does not exist or cannot be read.
    case configNotFound(path: String, detail: String)
    /// The image config was read but its image cannot be opened (bad config, a lower
    /// that is missing or corrupt, a registry that refuses).
    case imageFailed(path: String, detail: String)
    /// The folder named for a new upper exists already.
    case upperExists(path: String)
    /// The upper cannot be made or opened (on restore: it is gone).
    case upperFailed(path: String, detail: String)
    /// Another disk (or a reservation in progress) already has this socket path.
    case socketInUse(path: String, disk: String)
    /// A disk with this id exists (or is being added).
    case duplicateID(String)
    /// No disk has this id.
    case noSuchDisk(String)
    /// The frontend cannot listen on its socket.
    case frontendFailed(socket: String, detail: String)
    /// No route for this method and path.
    case noRoute(method: String, path: String)
    /// The route exists, the method does not.
    case methodNotAllowed(method: String, path: String)
    /// The request body exceeds the limit.
    case bodyTooLarge(limit: Int)
    /// The state file cannot be read or written.
    case stateFile(path: String, detail: String)
    /// Waiting for another add that opens the same lowers took too long.
    case timedOut(String)
    /// The daemon is stopping and takes no new disks.
    case shuttingDown

    /// The machine-readable code of the control API.
    public var code: String {
        switch self {
        case .badJSON: return "bad_json"
        case .unknownField: return "unknown_field"
        case .invalidField: return "invalid_field"
        case .configNotFound: return "config_not_found"
        case .imageFailed: return "image_open_failed"
        case .upperExists: return "upper_exists"
        case .upperFailed: return "upper_failed"
        case .socketInUse: return "socket_in_use"
        case .duplicateID: return "duplicate_id"
        case .noSuchDisk: return "no_such_disk"
        case .frontendFailed: return "frontend_failed"
        case .noRoute: return "not_found"
        case .methodNotAllowed: return "method_not_allowed"
        case .bodyTooLarge: return "body_too_large"
        case .stateFile: return "state_file"
        case .timedOut: return "timed_out"
        case .shuttingDown: return "shutting_down"
        }
    }

    /// The HTTP status the control API answers with.
    public var httpStatus: Int {
        switch self {
        case .badJSON, .unknownField, .invalidField: return 400
        case .configNotFound, .imageFailed: return 422
        case .upperExists, .socketInUse, .duplicateID: return 409
        case .noSuchDisk, .noRoute: return 404
        case .methodNotAllowed: return 405
        case .bodyTooLarge: return 413
        case .upperFailed, .frontendFailed, .stateFile: return 500
        case .timedOut, .shuttingDown: return 503
        }
    }

    public var description: String {
        switch self {
        case let .badJSON(d): return "request body is not valid JSON: \(d)"
        case let .unknownField(f): return "unknown field '\(f)'"
        case let .invalidField(f, d): return "'\(f)': \(d)"
        case let .configNotFound(p, d): return "\(p): \(d)"
        case let .imageFailed(p, d): return "\(p): image cannot be opened: \(d)"
        case let .upperExists(p): return "\(p): the upper folder exists already (a new upper is made in a folder that does not exist)"
        case let .upperFailed(p, d): return "\(p): upper: \(d)"
        case let .socketInUse(p, d): return "\(p): socket path is used by disk '\(d)'"
        case let .duplicateID(id): return "a disk with id '\(id)' exists"
        case let .noSuchDisk(id): return "no disk with id '\(id)'"
        case let .frontendFailed(s, d): return "\(s): frontend cannot start: \(d)"
        case let .noRoute(m, p): return "no such endpoint: \(m) \(p)"
        case let .methodNotAllowed(m, p): return "\(m) is not allowed on \(p)"
        case let .bodyTooLarge(l): return "request body exceeds \(l) bytes"
        case let .stateFile(p, d): return "state file \(p): \(d)"
        case let .timedOut(d): return "timed out: \(d)"
        case .shuttingDown: return "the daemon is shutting down"
        }
    }
}
