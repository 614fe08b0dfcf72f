import Synchronization
import Threading

/// An OCI distribution client for one registry host: manifests, blob sizes and
/// ranged blob reads, with anonymous, Basic and Bearer-token auth, retries, and
/// redirects that never carry the registry's Authorization to another host.
public final class RegistryClient: @unchecked Sendable {
    public let host: String
    public let options: RegistryOptions
    let transport: HTTPTransport
    let tokens = Mutex<[String: (value: String, expires: Double)]>([:])
    let basicHosts = Mutex<Set<String>>([])
    let resolved = Mutex<[String: (url: String, expires: Double)]>([:])
    /// Until when (monotonic seconds) the P2P proxy is not used after it failed.
    let p2pDownUntil = Mutex<Double>(0)
    /// How long range reads go to the registry directly after the P2P proxy failed.
    static let p2pPause = 30.0
    /// Requests sent (for tests and metrics).
    public let requestCount = Atomic<Int>(0)

    public static let manifestAccept = [
        MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList,
    ].joined(separator: ", ")

    public init(host: String, options: RegistryOptions = RegistryOptions()) {
        self.host = host
        self.options = options
        var t = HTTPTransport.Options()
        t.verifyTLS = !options.insecure
        t.caFile = options.caFile
        t.clientCert = options.clientCert
        t.clientKey = options.clientKey
        transport = HTTPTransport(options: t)
    }

    var base: String { (options.plainHTTP ? "http://" : "https://") + host + "/v2/" }

    public func blobURL(repository: String, digest: String) -> String { base + repository + "/blobs/" + digest }

    /// A User-Agent like overlaybd's.
    let userAgent = "User-Agent: obd/0.1"
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
    func trimmingCharacters() -> String { Substring(self).trimmingWhitespace() }
}
