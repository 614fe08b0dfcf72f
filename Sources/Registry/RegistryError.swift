import BlockIO

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
    /// A credential file that cannot be read (`cause`: the file error) or parsed (`cause`:
    /// the JSON decoder's error).
    case badCredentials(path: String, cause: UnderlyingError? = nil)
    case tooManyRequests(url: String)
    /// TLS verification failed: not retried (it will not get better).
    case tlsFailed(url: String, detail: String)
    /// The client was cancelled (its device is going away): not retried.
    case cancelled(url: String)

    /// The error this one wraps (why a credential file was refused), if any.
    public var underlying: (any Error)? {
        if case let .badCredentials(_, cause) = self { return cause?.error }
        return nil
    }

    /// A failure that may pass if tried again: connection errors, timeouts, 429 and 5xx
    /// (an outage or an overloaded server, not a wrong request or wrong credentials).
    public var isRetryable: Bool {
        switch self {
        case .connectionFailed, .timeout, .tooManyRequests: return true
        case let .http(_, status): return status >= 500
        default: return false
        }
    }

    /// overlaybd's result-file phrase for this failure, without the URL.
    public var reason: String {
        switch self {
        case .authenticationFailed: return "Authentication failed"
        case let .connectionFailed(_, detail), let .tlsFailed(_, detail): return "Connection failed (\(detail))"
        case .timeout: return "Get meta timedout"
        case .notFound: return "No such file or directory"
        case .tooManyRequests: return "Too many requests"
        case let .http(_, status): return "Unexpected response (HTTP \(status))"
        default: return description
        }
    }

    public var description: String {
        switch self {
        case let .invalidReference(r): return "invalid image reference '\(r)'"
        case let .authenticationFailed(url): return "failed to open remote file \(url): Authentication failed"
        case let .connectionFailed(url, detail): return "failed to open remote file \(url): Connection failed (\(detail))"
        case let .http(url, status): return "failed to open remote file \(url): Unexpected response (HTTP \(status))"
        case let .notFound(url): return "failed to open remote file \(url): No such file or directory"
        case let .badResponse(url, detail): return "\(url): bad response: \(detail)"
        case let .timeout(url): return "failed to open remote file \(url): Get meta timedout"
        case let .badCredentials(path, cause?) where cause.error is BlockIOError: return "credential file \(path): \(cause)"
        case let .badCredentials(path, _): return "credential file \(path): not valid JSON of the form {\"auths\": {...}}"
        case let .tooManyRequests(url): return "failed to open remote file \(url): Too many requests"
        case let .tlsFailed(url, detail): return "failed to open remote file \(url): Connection failed (\(detail))"
        case let .cancelled(url): return "failed to open remote file \(url): cancelled (the device is closing)"
        }
    }
}

/// Another module's error kept inside an error of this one, so that callers can still
/// look at it (`error`); two are equal when they read the same.
public struct UnderlyingError: Error, Equatable, CustomStringConvertible {
    public let error: any Error

    public init(_ error: any Error) { self.error = error }

    public var description: String { "\(error)" }

    public static func == (a: UnderlyingError, b: UnderlyingError) -> Bool { a.description == b.description }
}
