import FoundationEssentials
import Threading

/// Authentication: the Authorization header for a request, WWW-Authenticate challenges
/// (Basic, Bearer tokens), credentials and their reload after a 401 or 403.
extension RegistryClient {
    /// Reads the credential file again (after a 401 or 403); true if its credentials changed.
    func reloadCredentials() -> Bool {
        guard let file = options.credentialFile else { return false }
        do { return try file.reload() } catch {
            options.log?("\(error); keeping the credentials read before")
            return false
        }
    }

    func authorization(scope: String, repository: String) -> String? {
        if let t = tokens.withLock({ $0[scope] }), t.expires > monotonicSeconds() { return "Authorization: Bearer " + t.value }
        if basicHosts.withLock({ $0.contains(host) }), let c = credential(repository: repository) {
            return "Authorization: Basic " + Data("\(c.username):\(c.password)".utf8).base64EncodedString()
        }
        return nil
    }

    /// The credential for `repository`: from the credential file as read last, else the
    /// fixed credentials of the options.
    func credential(repository: String) -> Credential? {
        (options.credentialFile?.store ?? options.credentials).credential(host: host, repository: repository)
    }

    /// Answers a WWW-Authenticate challenge: Basic (use credentials) or Bearer (fetch a
    /// token, within `timeout` seconds). A token server that does not answer, or answers
    /// 429 or 5xx, gives a retryable error; one that refuses gives `authenticationFailed`.
    func authenticate(challenges: [String], scope: String, repository: String, url: String, timeout: Double) throws {
        let cred = credential(repository: repository)
        for ch in challenges {
            let lower = ch.lowercased()
            if lower.hasPrefix("basic") {
                guard cred != nil else { throw RegistryError.authenticationFailed(url: url) }
                basicHosts.withLock { _ = $0.insert(host) }
                return
            }
            if lower.hasPrefix("bearer") {
                let params = Self.challengeParameters(String(ch.dropFirst(6)))
                guard let realm = params["realm"] else { throw RegistryError.authenticationFailed(url: url) }
                var q = realm + (realm.contains("?") ? "&" : "?")
                if let service = params["service"] { q += "service=" + Self.percentEncode(service) + "&" }
                q += "scope=" + Self.percentEncode(params["scope"] ?? scope)
                var headers: [String] = []
                if let c = cred { headers.append("Authorization: Basic " + Data("\(c.username):\(c.password)".utf8).base64EncodedString()) }
                requestCount.add(1, ordering: .relaxed)
                let r = try transport.perform(HTTPTransport.Request(url: q, headers: headers, timeoutMilliseconds: Int(timeout * 1000) + 1))
                switch r.status {
                case 200: break
                case 429: throw RegistryError.tooManyRequests(url: HTTPTransport.redact(realm))
                case 500...599: throw RegistryError.http(url: HTTPTransport.redact(realm), status: r.status)
                default: throw RegistryError.authenticationFailed(url: url)
                }
                struct Token: Decodable { var token: String?; var access_token: String?; var expires_in: Int? }
                guard let t = try? JSONDecoder().decode(Token.self, from: Data(r.body)), let value = t.token ?? t.access_token else {
                    throw RegistryError.authenticationFailed(url: url)
                }
                let life = Double(max(10, (t.expires_in ?? 60) - 5))
                tokens.withLock { $0[scope] = (value, monotonicSeconds() + life) }
                return
            }
        }
        throw RegistryError.authenticationFailed(url: url)
    }

    /// `key="value", key=value` pairs of a challenge.
    static func challengeParameters(_ s: String) -> [String: String] {
        var out: [String: String] = [:]
        var rest = Substring(s)
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = rest[..<eq].trimmingWhitespace().lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                let end = rest.firstIndex(of: "\"") ?? rest.endIndex
                value = String(rest[..<end])
                rest = end < rest.endIndex ? rest[rest.index(after: end)...] : rest[end...]
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = String(rest[..<end]).trimmingCharacters()
                rest = rest[end...]
            }
            out[key] = value
        }
        return out
    }
}
