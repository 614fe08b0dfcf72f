/// Errors of the registry client. Texts for the common failures match overlaybd's
/// result-file wording ("Authentication failed", "Connection failed"). No message ever
/// contains a credential or a token.
public enum RegistryError: Error, CustomStringConvertible, Equatable {
    case invalidReference(String)
    case authenticationFailed(url: String)
    case connectionFailed(url: String, detail: String)
    case http(url: String, status: Int)
    case notFound(url: String)
    case badResponse(url: String, detail: String)
    case timeout(url: String)

    public var description: String {
        switch self {
        case let .invalidReference(r): return "invalid image reference '\(r)'"
        case let .authenticationFailed(url): return "failed to open remote file \(url): Authentication failed"
        case let .connectionFailed(url, detail): return "failed to open remote file \(url): Connection failed (\(detail))"
        case let .http(url, status): return "\(url): HTTP status \(status)"
        case let .notFound(url): return "\(url): not found (HTTP 404)"
        case let .badResponse(url, detail): return "\(url): bad response: \(detail)"
        case let .timeout(url): return "\(url): Get meta timedout"
        }
    }
}
