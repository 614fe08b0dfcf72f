import Registry

extension GlobalConfig {
    /// The registry options `overlaybd.json` gives a client of `host`: the operation
    /// deadline, the outage policy, TLS (`registryConfig.caFile`, `certConfig`,
    /// `insecureHosts`) and the credential file (read again on 401/403). The one place
    /// every user builds them: image lowers, `obd pull`, `obd convert`.
    /// - Parameters:
    ///   - plainHTTP: http:// instead of https:// (a repoBlobUrl's scheme, or a CLI flag).
    ///   - insecure: skip TLS verification (a CLI flag); `insecureHosts` adds to it.
    ///   - credentials: given credentials used instead of the credential file (e.g. `-u`
    ///     on the command line in front of the file's entries).
    public func registryOptions(host: String, plainHTTP: Bool, insecure: Bool = false,
                                credentials: CredentialStore? = nil) throws -> RegistryOptions {
        var options = RegistryOptions(plainHTTP: plainHTTP, insecure: insecure || registryConfig.insecureHosts.contains(host))
        if let credentials {
            options.credentials = credentials
        } else {
            options.credentialFile = try credentialFileHandle()
        }
        options.timeoutSeconds = registryConfig.timeoutSeconds
        options.blockOnOutage = registryConfig.blockOnOutage
        if !registryConfig.caFile.isEmpty { options.caFile = registryConfig.caFile }
        if !certConfig.certFile.isEmpty { options.clientCert = certConfig.certFile }
        if !certConfig.keyFile.isEmpty { options.clientKey = certConfig.keyFile }
        return options
    }

    /// The credential file of `credentialConfig` (mode "file", or the legacy
    /// `credentialFilePath`); other modes are refused clearly.
    public func credentialFileHandle() throws -> CredentialFile {
        guard ["", "file"].contains(credentialConfig.mode) else {
            throw ImageError.config(path: path.isEmpty ? "overlaybd.json (built-in defaults)" : path,
                                    detail: "credentialConfig.mode '\(credentialConfig.mode)' is not supported (use \"file\")")
        }
        return try CredentialFile(path: credentialFile)
    }
}
