import BlockIO
import Convert
import Image
import Registry

/// The registry flags `convert` and `trace attach` share, and the image stores they open
/// (a registry repository or an OCI layout, `oci:PATH[:TAG]`).
struct ImageStores {
    let plainHTTP: Bool
    let insecure: Bool
    let global: GlobalConfig
    /// `-u` in front of the credential file's entries; nil: the credential file itself
    /// (read again on 401/403).
    let credentials: CredentialStore?

    /// Loads the global config (`--config`); `username` (`user[:password]`) comes first
    /// for the registry hosts among `references`.
    init(plainHTTP: Bool, insecure: Bool, configPath: String?, username: String?, references: [String]) throws {
        self.plainHTTP = plainHTTP
        self.insecure = insecure
        global = try GlobalConfig.load(path: configPath)
        if let username {
            var creds = try CredentialStore.load(path: global.credentialFile)
            let parts = username.split(separator: ":", maxSplits: 1)
            let c = Credential(username: String(parts[0]), password: parts.count > 1 ? String(parts[1]) : "")
            let hosts = try references.compactMap { try Self.host($0) }
            creds.entries.insert(contentsOf: hosts.map { ($0, c) }, at: 0)
            credentials = creds
        } else {
            credentials = nil
        }
    }

    /// The store a reference names; a registry client gets the global config's deadline,
    /// outage policy, TLS settings and credentials (`GlobalConfig.registryOptions`).
    func store(_ text: String) throws -> any ImageSource & ImageTarget {
        switch try ImageLocation(parsing: text) {
        case let .layout(path, tag): return LayoutStore(path: path, tag: tag)
        case let .registry(ref):
            let o = try global.registryOptions(host: ref.host, plainHTTP: plainHTTP, insecure: insecure, credentials: credentials)
            return RegistryStore(client: RegistryClient(host: ref.host, options: o), reference: ref)
        }
    }

    /// The tag a target reference writes (a layout's tag, a registry tag or digest).
    static func tag(_ text: String) throws -> String? {
        switch try ImageLocation(parsing: text) {
        case let .layout(_, t): return t
        case let .registry(r): return r.tag ?? r.digest
        }
    }

    static func host(_ text: String) throws -> String? {
        if case let .registry(r) = try ImageLocation(parsing: text) { return r.host }
        return nil
    }
}
