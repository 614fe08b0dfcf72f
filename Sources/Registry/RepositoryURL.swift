/// A repository located by overlaybd's `repoBlobUrl`
/// (`<scheme>://<host>/v2/<repository>/blobs`): the blob of a digest is this URL + "/" +
/// digest. The scheme decides plain HTTP (an explicit `http://`) or TLS.
public struct RepositoryURL: Equatable, Sendable, CustomStringConvertible {
    public var plainHTTP: Bool
    public var host: String
    public var repository: String

    public init(plainHTTP: Bool, host: String, repository: String) {
        self.plainHTTP = plainHTTP
        self.host = host
        self.repository = repository
    }

    /// Parses a `repoBlobUrl`; throws a clear error for anything else.
    public init(repoBlobUrl text: String) throws {
        var rest = Substring(text)
        if rest.hasPrefix("https://") {
            plainHTTP = false
            rest = rest.dropFirst(8)
        } else if rest.hasPrefix("http://") {
            plainHTTP = true
            rest = rest.dropFirst(7)
        } else {
            throw RegistryError.invalidReference("repoBlobUrl '\(text)' does not start with https:// or http://")
        }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[1] == "v2", parts.last == "blobs", !parts[0].isEmpty,
              parts[2..<(parts.count - 1)].allSatisfy({ !$0.isEmpty }) else {
            throw RegistryError.invalidReference("repoBlobUrl '\(text)' is not of the form <scheme>://<host>/v2/<repository>/blobs")
        }
        host = String(parts[0])
        repository = parts[2..<(parts.count - 1)].joined(separator: "/")
    }

    public var description: String { (plainHTTP ? "http://" : "https://") + host + "/v2/" + repository + "/blobs" }
}
