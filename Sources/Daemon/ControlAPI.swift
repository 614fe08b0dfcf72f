import FoundationEssentials

/// The control API's behaviour, independent of the transport: a decoded request run
/// against a `DiskRegistry`, answered by a status and a JSON body.
public struct ControlAPI: Sendable {
    /// An answer: HTTP status and JSON body.
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
    }

    /// The error body: `{"error": "<sentence>", "code": "<code>"}`.
    public struct ErrorBody: Codable, Sendable, Equatable {
        public var error: String
        public var code: String
    }

    /// `GET /v1/health`.
    public struct Health: Codable, Sendable, Equatable {
        public var status: String
        public var disks: Int
        /// Distinct lowers open (shared by the disks).
        public var lowers: Int
        /// Images opened since start.
        public var lowerOpens: Int
    }

    /// `GET /v1/disks`.
    public struct DiskList: Codable, Sendable, Equatable {
        public var disks: [DiskInfo]
    }

    /// `DELETE /v1/disks/{id}`.
    public struct Removed: Codable, Sendable, Equatable {
        public var removed: String
    }

    public let registry: DiskRegistry

    public init(registry: DiskRegistry) { self.registry = registry }

    /// Decodes and runs one request. Never throws: every failure is an error response.
    public func respond(method: String, target: String, body: [UInt8]) -> Response {
        do throws(DaemonError) {
            let route = try ControlRoute.decode(method: method, target: target, body: body)
            return try run(route)
        } catch {
            return ControlAPI.error(error)
        }
    }

    func run(_ route: ControlRoute) throws(DaemonError) -> Response {
        switch route {
        case .health:
            let users = registry.lowers.users
            return ControlAPI.json(200, Health(status: "ok", disks: registry.count, lowers: users.count, lowerOpens: registry.lowers.opens))
        case .listDisks:
            return ControlAPI.json(200, DiskList(disks: registry.list()))
        case let .addDisk(spec):
            return ControlAPI.json(201, try registry.add(spec))
        case let .getDisk(id):
            return ControlAPI.json(200, try registry.info(id: id))
        case let .removeDisk(id):
            try registry.remove(id: id)
            return ControlAPI.json(200, Removed(removed: id))
        case let .diskStats(id):
            return ControlAPI.json(200, try registry.stats(id: id))
        }
    }

    /// The response for `error`.
    public static func error(_ error: DaemonError) -> Response {
        json(error.httpStatus, ErrorBody(error: error.description, code: error.code))
    }

    static func json<T: Encodable>(_ status: Int, _ value: T) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let bytes = (try? encoder.encode(value)).map { Array($0) } ?? Array(#"{"error":"cannot encode the response","code":"internal"}"#.utf8)
        return Response(status: status, body: bytes + [0x0a])
    }
}
