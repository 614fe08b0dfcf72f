/// Options for talking to one registry host.
public struct RegistryOptions: Sendable {
    /// Use http:// instead of https:// (explicit opt-in, per host).
    public var plainHTTP = false
    /// Skip TLS verification (explicit opt-in).
    public var insecure = false
    public var caFile: String?
    public var clientCert: String?
    public var clientKey: String?
    public var credentials = CredentialStore()
    /// Deadline of one operation (a ranged read, a HEAD, a manifest GET), retries included.
    public var timeoutSeconds = 30
    /// Most attempts for retryable failures (connection errors, timeouts, 429, 5xx);
    /// the deadline usually ends retrying first.
    public var attempts = 64
    /// Blob range reads outlast the deadline while the failure is an outage (connection
    /// errors, timeouts, 429, 5xx): they keep retrying, with pauses growing to 4 s, until
    /// the registry answers (`registryConfig.blockOnOutage`). Each try still has the
    /// deadline as its own time limit; wrong credentials and 404s still fail at once.
    public var blockOnOutage = false
    /// A P2P proxy for blob range reads (`p2pConfig`); sizes, manifests and uploads go to
    /// the registry directly.
    public var p2p: P2PProxy?
    /// Credentials read from this file and read again on 401/403 (rotated secrets); when
    /// set, it is used instead of `credentials`.
    public var credentialFile: CredentialFile?
    /// Receives notices worth a log line (P2P fallback, an unreadable credential file);
    /// never a secret.
    public var log: (@Sendable (String) -> Void)?

    public init(plainHTTP: Bool = false, insecure: Bool = false, credentials: CredentialStore = CredentialStore()) {
        self.plainHTTP = plainHTTP
        self.insecure = insecure
        self.credentials = credentials
    }
}
