import CoreMetrics

/// Registry metrics (swift-metrics; the entry points bootstrap a Prometheus backend).
/// Created on first use, which comes after the entry point's bootstrap.
final class RegistryMetrics: Sendable {
    static let shared = RegistryMetrics()

    /// On-demand ranged reads from registries.
    let fetches = Counter(label: "obd_registry_fetches_total")
    let fetchBytes = Counter(label: "obd_registry_fetch_bytes_total")
    let fetchLatency = Timer(label: "obd_registry_fetch_duration")

    /// Range requests sent through the P2P proxy, and P2P requests that failed and were
    /// sent to the registry directly instead.
    let p2pFetches = Counter(label: "obd_registry_p2p_requests_total")
    let p2pFallbacks = Counter(label: "obd_registry_p2p_fallbacks_total")

    /// Failed attempts by kind (connection, timeout, server, throttled, auth, ...).
    func errors(kind: String) -> Counter {
        Counter(label: "obd_registry_errors_total", dimensions: [("kind", kind)])
    }
}

extension RegistryError {
    /// A short label for metrics.
    public var kind: String {
        switch self {
        case .invalidReference: return "reference"
        case .authenticationFailed: return "auth"
        case .connectionFailed: return "connection"
        case .http: return "http"
        case .notFound: return "not_found"
        case .badResponse: return "bad_response"
        case .timeout: return "timeout"
        case .badCredentials: return "credentials"
        case .tooManyRequests: return "throttled"
        case .tlsFailed: return "tls"
        case .cancelled: return "cancelled"
        }
    }
}
