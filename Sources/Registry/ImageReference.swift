/// An image reference: `[host[:port]/]repo[:tag][@digest]`, with Docker Hub defaults
/// (`docker.io` -> `registry-1.docker.io`, single-name repos under `library/`).
public struct ImageReference: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var repository: String
    public var tag: String?
    public var digest: String?

    public static let dockerHub = "registry-1.docker.io"

    public init(host: String, repository: String, tag: String? = nil, digest: String? = nil) {
        self.host = host
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(parsing text: String) throws {
        var rest = Substring(text)
        if rest.hasPrefix("docker://") { rest = rest.dropFirst(9) }
        guard !rest.isEmpty, !rest.contains(" ") else { throw RegistryError.invalidReference(text) }
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            digest = String(rest[rest.index(after: at)...])
            rest = rest[..<at]
            guard let d = digest, Digest.isWellFormed(d) else { throw RegistryError.invalidReference(text) }
        }
        var host = "docker.io"
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" {
                host = String(first)
                rest = rest[rest.index(after: slash)...]
            }
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
            guard let t = tag, !t.isEmpty, t.count <= 128,
                  t.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" }) else {
                throw RegistryError.invalidReference(text)
            }
        }
        var repo = String(rest)
        guard !repo.isEmpty, repo.split(separator: "/", omittingEmptySubsequences: false).allSatisfy({ part in
            !part.isEmpty && part.allSatisfy { $0.isLowercase || $0.isNumber || "._-".contains($0) }
        }) else { throw RegistryError.invalidReference(text) }
        if host == "docker.io" {
            host = ImageReference.dockerHub
            if !repo.contains("/") { repo = "library/" + repo }
        }
        if tag == nil && digest == nil { tag = "latest" }
        self.init(host: host, repository: repo, tag: tag, digest: digest)
    }

    /// The manifest reference: digest if present, else tag.
    public var reference: String { digest ?? tag ?? "latest" }

    public var description: String {
        "\(host)/\(repository)" + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "")
    }
}
