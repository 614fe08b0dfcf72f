import FoundationEssentials

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

/// Finds credentials for a registry URL from overlaybd's `cred.json` or docker's
/// `config.json` (`{"auths": {"<prefix>": {"username", "password"} | {"auth": base64}}}`):
/// the first key that is a prefix of `host/repository` wins (as in overlaybd).
public struct CredentialStore: Sendable {
    public var entries: [(prefix: String, credential: Credential)] = []

    public init(entries: [(prefix: String, credential: Credential)] = []) { self.entries = entries }

    /// Parses cred.json / docker config.json bytes.
    public static func parse(_ data: Data) throws -> CredentialStore {
        struct Auth: Decodable { var username: String?; var password: String?; var auth: String? }
        struct File: Decodable { var auths: [String: Auth]? }
        let file = try JSONDecoder().decode(File.self, from: data)
        var store = CredentialStore()
        for (key, a) in (file.auths ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let u = a.username, let p = a.password {
                store.entries.append((key, Credential(username: u, password: p)))
            } else if let b = a.auth, let raw = Data(base64Encoded: b), let text = String(data: raw, encoding: .utf8),
                      let colon = text.firstIndex(of: ":") {
                store.entries.append((key, Credential(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))))
            }
        }
        return store
    }

    /// The credential for `host/repository`.
    public func credential(host: String, repository: String) -> Credential? {
        let target = "\(host)/\(repository)"
        for (prefix, c) in entries {
            var p = prefix
            for scheme in ["https://", "http://"] where p.hasPrefix(scheme) { p = String(p.dropFirst(scheme.count)) }
            if target.hasPrefix(p) || p == host || (host == ImageReference.dockerHub && p.hasPrefix("index.docker.io")) {
                return c
            }
        }
        return nil
    }
}
