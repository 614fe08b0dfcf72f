import BlockIO
import FoundationEssentials
import Glibc
import Synchronization

/// A username and password (or token) for a registry. Never printed.
public struct Credential: Equatable, Sendable, CustomStringConvertible {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    public var description: String { "Credential(username: \(username), password: <redacted>)" }
}

/// Credentials from overlaybd's `cred.json` or docker's `config.json`
/// (`{"auths": {"<key>": {"username", "password"} | {"auth": base64("user:pass")}}}`).
///
/// Matching follows overlaybd: a blob of `host/seg1/seg2` is matched by the keys
/// `host`, `host/seg1`, `host/seg1/seg2` (scheme and trailing `/` ignored), and the
/// *first key in file order* that equals one of them wins, not the longest.
public struct CredentialStore: Sendable, Equatable {
    public var entries: [(key: String, credential: Credential)] = []

    public init(entries: [(key: String, credential: Credential)] = []) { self.entries = entries }

    public static func == (a: CredentialStore, b: CredentialStore) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.credential == $1.credential }
    }

    /// Parses cred.json / docker config.json bytes (entries kept in file order).
    public static func parse(_ data: Data) throws -> CredentialStore {
        struct Auth: Decodable { var username: String?; var password: String?; var auth: String? }
        struct File: Decodable { var auths: [String: Auth]? }
        let file = try JSONDecoder().decode(File.self, from: data)
        let auths = file.auths ?? [:]
        var order = JSONKeyOrder.keys(Array(data), path: ["auths"])
        if Set(order) != Set(auths.keys) { order = auths.keys.sorted() }
        var store = CredentialStore()
        for key in order {
            guard let a = auths[key] else { continue }
            if let u = a.username, let p = a.password, !u.isEmpty {
                store.entries.append((key, Credential(username: u, password: p)))
            } else if let b = a.auth, let raw = Data(base64Encoded: b), let text = String(data: raw, encoding: .utf8),
                      let colon = text.firstIndex(of: ":") {
                store.entries.append((key, Credential(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))))
            }
        }
        return store
    }

    /// Reads `path`; a missing file means no credentials (anonymous), a malformed one is an error.
    public static func load(path: String) throws -> CredentialStore {
        guard let data = FileBytes.read(path) else {
            // Only a missing file means anonymous; one that cannot be read is an error.
            if errno == ENOENT { return CredentialStore() }
            throw RegistryError.badCredentials(path: path, cause: UnderlyingError(BlockIOError.open(path: path, errno: errno)))
        }
        do { return try parse(Data(data)) } catch {
            throw RegistryError.badCredentials(path: path, cause: UnderlyingError(error))
        }
    }

    /// The credential for a blob in `repository` on `host`.
    public func credential(host: String, repository: String) -> Credential? {
        var candidates = [host]
        var prefix = host
        for seg in repository.split(separator: "/") {
            prefix += "/" + seg
            candidates.append(prefix)
        }
        if host == ImageReference.dockerHub { candidates += ["docker.io", "index.docker.io", "index.docker.io/v1"] }
        for (key, c) in entries {
            var k = Substring(key)
            for scheme in ["https://", "http://"] where k.hasPrefix(scheme) { k = k.dropFirst(scheme.count) }
            while k.hasSuffix("/") { k = k.dropLast() }
            if candidates.contains(String(k)) { return c }
        }
        return nil
    }
}

/// A credential file that may change while devices run (rotated passwords or tokens): the
/// registry client reads it again when a registry answers 401 or 403, and uses the new
/// secret from then on, without a restart.
public final class CredentialFile: Sendable {
    public let path: String
    private let state: Mutex<CredentialStore>

    /// Reads `path` (see `CredentialStore.load`: a missing file means anonymous access).
    public init(path: String) throws {
        self.path = path
        state = Mutex(try CredentialStore.load(path: path))
    }

    /// The credentials read last.
    public var store: CredentialStore { state.withLock { $0 } }

    /// Reads the file again; true if its credentials differ from the ones in use. A file
    /// that cannot be read or parsed now (caught mid-write, say) is an error and leaves
    /// the credentials in use unchanged.
    @discardableResult
    public func reload() throws -> Bool {
        let fresh = try CredentialStore.load(path: path)
        return state.withLock { s in
            if s == fresh { return false }
            s = fresh
            return true
        }
    }
}

/// Whole-file reads without Foundation's FileManager.
enum FileBytes {
    static func read(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return out
    }
}
