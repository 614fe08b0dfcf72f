import FoundationEssentials

/// What a disk is, as the control API's add request and the state file give it: an
/// image config, a mode, a frontend, and for a writable disk the folder of its own upper.
public struct DiskSpec: Sendable, Equatable, Codable {
    /// How the guest may use the disk.
    public enum Mode: String, Sendable, Codable, CaseIterable {
        /// Reads only; writes fail (vhost-user advertises VIRTIO_BLK_F_RO, NBD the read-only flag).
        case readOnly = "read-only"
        /// Writes go to an upper made for this disk over the shared lowers.
        case writable
    }

    /// How the disk is exported.
    public struct Frontend: Sendable, Equatable, Codable {
        /// The protocol.
        public enum Kind: String, Sendable, Codable, CaseIterable {
            /// A vhost-user-blk back-end socket, for QEMU, Cloud Hypervisor and other VMMs.
            case vhostUser = "vhost-user-blk"
            /// An NBD (fixed newstyle) server on a unix socket.
            case nbd
        }
        public var type: Kind
        /// Absolute path of the unix socket the frontend listens on.
        public var socket: String
        /// vhost-user-blk request queues (1 to 64); ignored by nothing: an error for NBD.
        public var queues: Int?
        /// vhost-user-blk serial (GET_ID answer, up to 20 bytes).
        public var serial: String?

        public init(type: Kind, socket: String, queues: Int? = nil, serial: String? = nil) {
            self.type = type
            self.socket = socket
            self.queues = queues
            self.serial = serial
        }
    }

    /// Unique name of the disk ([A-Za-z0-9._-], 1 to 64 characters).
    public var id: String
    /// Absolute path of the image's `config.v1.json`; its lowers are the disk's lowers.
    public var config: String
    public var mode: Mode
    public var frontend: Frontend
    /// Writable disks: absolute path of a folder that does not exist yet; the daemon
    /// makes it and a new sparse upper in it. Read-only disks: must be absent.
    public var upper: String?
    /// Writable disks: `true` opens the upper a daemon made before in `upper` instead of
    /// making a new one (the folder must then exist). What a restart does for each disk
    /// of the state file.
    public var reopen: Bool?

    public init(id: String, config: String, mode: Mode, frontend: Frontend, upper: String? = nil, reopen: Bool? = nil) {
        self.id = id
        self.config = config
        self.mode = mode
        self.frontend = frontend
        self.upper = upper
        self.reopen = reopen
    }

    /// The upper's data file inside its folder (an LSMT sparse writable layer: the disk
    /// in place after a 4 KiB header, holes reading from the lowers).
    public static let upperDataName = "writable_data"

    /// Checks every field's domain, naming the field at fault.
    public func validate() throws(DaemonError) {
        guard (1...64).contains(id.utf8.count),
              id.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }),
              id != ".", id != ".." else {
            throw .invalidField(field: "id", detail: "'\(id)' is not 1 to 64 characters of A-Z a-z 0-9 . _ -")
        }
        guard config.hasPrefix("/") else { throw .invalidField(field: "config", detail: "'\(config)' is not an absolute path") }
        guard frontend.socket.hasPrefix("/") else {
            throw .invalidField(field: "frontend.socket", detail: "'\(frontend.socket)' is not an absolute path")
        }
        guard frontend.socket.utf8.count < 108 else {
            throw .invalidField(field: "frontend.socket", detail: "path of \(frontend.socket.utf8.count) bytes is too long for a unix socket (107 at most)")
        }
        switch frontend.type {
        case .vhostUser:
            if let q = frontend.queues, !(1...64).contains(q) {
                throw .invalidField(field: "frontend.queues", detail: "\(q) is not between 1 and 64")
            }
            if let s = frontend.serial, s.utf8.count > 20 {
                throw .invalidField(field: "frontend.serial", detail: "\(s.utf8.count) bytes; 20 at most")
            }
        case .nbd:
            if frontend.queues != nil { throw .invalidField(field: "frontend.queues", detail: "only a vhost-user-blk frontend has queues") }
            if frontend.serial != nil { throw .invalidField(field: "frontend.serial", detail: "only a vhost-user-blk frontend has a serial") }
        }
        switch mode {
        case .writable:
            guard let u = upper else { throw .invalidField(field: "upper", detail: "a writable disk needs the folder for its new upper") }
            guard u.hasPrefix("/") else { throw .invalidField(field: "upper", detail: "'\(u)' is not an absolute path") }
            guard u != "/" else { throw .invalidField(field: "upper", detail: "'/' cannot be an upper folder") }
        case .readOnly:
            if upper != nil { throw .invalidField(field: "upper", detail: "a read-only disk has no upper") }
            if reopen != nil { throw .invalidField(field: "reopen", detail: "a read-only disk has no upper to reopen") }
        }
    }

    /// Decodes an add request strictly: a JSON object with only the known fields (an
    /// unknown one is an error, never ignored), every required field present, then
    /// `validate()`.
    public static func decode(json: [UInt8]) throws(DaemonError) -> DiskSpec {
        let spec: DiskSpec
        do {
            spec = try JSONDecoder().decode(Strict.self, from: Data(json)).spec
        } catch let e as DaemonError {
            throw e
        } catch let e as DecodingError {
            throw DiskSpec.translate(e)
        } catch {
            throw .badJSON("\(error)")
        }
        try spec.validate()
        return spec
    }

    private static func translate(_ e: DecodingError) -> DaemonError {
        func name(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch e {
        case let .keyNotFound(key, ctx):
            return .invalidField(field: name(ctx.codingPath + [key]), detail: "missing")
        case let .typeMismatch(_, ctx) where !ctx.codingPath.isEmpty:
            return .invalidField(field: name(ctx.codingPath), detail: "wrong type")
        case let .valueNotFound(_, ctx) where !ctx.codingPath.isEmpty:
            return .invalidField(field: name(ctx.codingPath), detail: "null is not allowed")
        case let .dataCorrupted(ctx) where !ctx.codingPath.isEmpty:
            return .invalidField(field: name(ctx.codingPath), detail: ctx.debugDescription)
        case .typeMismatch, .valueNotFound:
            return .badJSON("expected a JSON object")
        case .dataCorrupted:
            return .badJSON("not valid JSON")
        @unknown default:
            return .badJSON("cannot decode")
        }
    }

    /// The decoding that refuses unknown keys at each level.
    private struct Strict: Decodable {
        let spec: DiskSpec
        init(from decoder: any Decoder) throws {
            try AnyKey.refuseUnknown(decoder, known: ["id", "config", "mode", "frontend", "upper", "reopen"], prefix: "")
            let c = try decoder.container(keyedBy: AnyKey.self)
            if c.contains(AnyKey("frontend")) {
                let fd = try c.superDecoder(forKey: AnyKey("frontend"))
                try AnyKey.refuseUnknown(fd, known: ["type", "socket", "queues", "serial"], prefix: "frontend.")
            }
            spec = try DiskSpec(from: decoder)
        }
    }
}

/// A coding key for any name: lists the keys an object really has.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }

    /// Throws `unknownField` for the first key of the object at `decoder` outside `known`.
    static func refuseUnknown(_ decoder: any Decoder, known: Set<String>, prefix: String) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        if let bad = c.allKeys.map(\.stringValue).sorted().first(where: { !known.contains($0) }) {
            throw DaemonError.unknownField(prefix + bad)
        }
    }
}
