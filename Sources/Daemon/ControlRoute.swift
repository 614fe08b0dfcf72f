/// A control API request, decoded from its method, target and body: what the daemon
/// is asked to do. Decoding is pure (no disk is touched), so it is fuzzed alone.
public enum ControlRoute: Sendable, Equatable {
    case health
    case listDisks
    case addDisk(DiskSpec)
    case getDisk(id: String)
    case removeDisk(id: String)
    case diskStats(id: String)

    /// Largest request body accepted, in bytes.
    public static let maxBody = 1 << 20

    /// Decodes a request. `target` is the request-target of the HTTP request line
    /// (`/v1/disks?x` is `/v1/disks`: a query is ignored).
    public static func decode(method: String, target: String, body: [UInt8]) throws(DaemonError) -> ControlRoute {
        guard body.count <= maxBody else { throw .bodyTooLarge(limit: maxBody) }
        var path = Substring(target)
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        while path.count > 1 && path.hasSuffix("/") { path = path.dropLast() }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        // parts[0] is "" for a path that starts with "/".
        guard parts.count >= 2, parts[0].isEmpty, parts[1] == "v1" else { throw .noRoute(method: method, path: String(path)) }
        let rest = Array(parts.dropFirst(2))
        func only(_ m: String, _ route: ControlRoute) throws(DaemonError) -> ControlRoute {
            guard method == m else { throw .methodNotAllowed(method: method, path: String(path)) }
            return route
        }
        func noBody() throws(DaemonError) {
            guard body.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) else {
                throw .invalidField(field: "body", detail: "\(method) \(path) takes no body")
            }
        }
        switch rest.count {
        case 1 where rest[0] == "health":
            try noBody()
            return try only("GET", .health)
        case 1 where rest[0] == "disks":
            switch method {
            case "GET":
                try noBody()
                return .listDisks
            case "POST": return .addDisk(try DiskSpec.decode(json: body))
            default: throw .methodNotAllowed(method: method, path: String(path))
            }
        case 2 where rest[0] == "disks":
            let id = try decodeID(rest[1])
            try noBody()
            switch method {
            case "GET": return .getDisk(id: id)
            case "DELETE": return .removeDisk(id: id)
            default: throw .methodNotAllowed(method: method, path: String(path))
            }
        case 3 where rest[0] == "disks" && rest[2] == "stats":
            let id = try decodeID(rest[1])
            try noBody()
            return try only("GET", .diskStats(id: id))
        default:
            throw .noRoute(method: method, path: String(path))
        }
    }

    /// A disk id from a path segment; only the id alphabet is allowed, so no escapes.
    private static func decodeID(_ s: Substring) throws(DaemonError) -> String {
        let id = String(s)
        guard (1...64).contains(id.utf8.count),
              id.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }) else {
            throw .invalidField(field: "id", detail: "'\(id)' is not a disk id (1 to 64 characters of A-Z a-z 0-9 . _ -)")
        }
        return id
    }
}
