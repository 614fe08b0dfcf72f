import BlockIO
import FoundationEssentials
import Glibc
import Synchronization
import Threading

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

/// An OCI distribution client for one registry host: manifests, blob sizes and
/// ranged blob reads, with anonymous, Basic and Bearer-token auth, retries, and
/// redirects that never carry the registry's Authorization to another host.
public final class RegistryClient: @unchecked Sendable {
    public let host: String
    public let options: RegistryOptions
    private let transport: HTTPTransport
    private let tokens = Mutex<[String: (value: String, expires: Double)]>([:])
    private let basicHosts = Mutex<Set<String>>([])
    private let resolved = Mutex<[String: (url: String, expires: Double)]>([:])
    /// Until when (monotonic seconds) the P2P proxy is not used after it failed.
    private let p2pDownUntil = Mutex<Double>(0)
    /// How long range reads go to the registry directly after the P2P proxy failed.
    static let p2pPause = 30.0
    /// Requests sent (for tests and metrics).
    public let requestCount = Atomic<Int>(0)

    public static let manifestAccept = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
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

    /// The manifest bytes, media type and digest (from Docker-Content-Digest if sent).
    public func manifest(repository: String, reference: String) throws -> (bytes: [UInt8], mediaType: String, digest: String?) {
        let url = base + repository + "/manifests/" + reference
        let r = try send(url: url, repository: repository, headers: ["Accept: " + Self.manifestAccept])
        try check(r, url)
        return (r.body, r.headers["content-type"] ?? "", r.headers["docker-content-digest"])
    }

    /// The size of a blob: `HEAD` (following redirects); when that is refused (a pre-signed
    /// object-store URL signs `GET` only) or has no length, `GET` with `Range: bytes=0-0`
    /// and the total of its Content-Range, as overlaybd does. One deadline for both.
    public func blobSize(repository: String, digest: String) throws -> UInt64 {
        let url = blobURL(repository: repository, digest: digest)
        let deadline = Deadline(seconds: options.timeoutSeconds)
        let r = try send(url: url, repository: repository, method: "HEAD", followRedirects: true, deadline: deadline)
        if r.status == 200, let len = r.headers["content-length"].flatMap(UInt64.init) { return len }
        guard [200, 400, 403, 405, 501].contains(r.status) else {
            try check(r, url)
            throw RegistryError.badResponse(url: url, detail: "HEAD answered \(r.status)")
        }
        var first: UInt8 = 0
        let g = try withUnsafeMutableBytes(of: &first) {
            try send(url: url, repository: repository, followRedirects: true, range: 0..<1, target: $0, deadline: deadline)
        }
        // "bytes 0-0/<total>" (206), "bytes */<total>" (416: an empty blob).
        if g.status == 206 || g.status == 416, let total = g.headers["content-range"].flatMap(Self.contentRangeTotal) { return total }
        try check(g, url)
        if g.status == 200, let len = g.headers["content-length"].flatMap(UInt64.init) { return len }
        throw RegistryError.badResponse(url: url, detail: "HEAD answered \(r.status) and GET gave no Content-Range total")
    }

    /// The total of a Content-Range value (`bytes 0-0/1234`), nil if unknown (`*`).
    static func contentRangeTotal(_ value: String) -> UInt64? {
        guard let slash = value.lastIndex(of: "/") else { return nil }
        return UInt64(value[value.index(after: slash)...].trimmingWhitespace())
    }

    /// Reads `buffer.count` bytes of a blob at `offset` with HTTP Range requests.
    /// Returns the bytes read (fewer only at the end of the blob). A response shorter
    /// than asked (a server or proxy that cut the body) is continued from where it stopped.
    public func readBlob(repository: String, digest: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let started = monotonicSeconds()
        // One deadline for the read, its retries, token fetches and continuations.
        let deadline = Deadline(seconds: options.timeoutSeconds, patient: options.blockOnOutage)
        var done = 0
        while done < buffer.count {
            let n = try readOnce(repository: repository, digest: digest, offset: offset + UInt64(done),
                                 into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), deadline: deadline)
            if n == 0 { break }
            done += n
        }
        let m = RegistryMetrics.shared
        m.fetches.increment()
        m.fetchBytes.increment(by: done)
        m.fetchLatency.recordNanoseconds(Int64((monotonicSeconds() - started) * 1e9))
        return done
    }

    private func readOnce(repository: String, digest: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer,
                          deadline: Deadline) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        let url = blobURL(repository: repository, digest: digest)
        let range = offset..<(offset + UInt64(buffer.count))
        let r = try send(url: url, repository: repository, followRedirects: true, range: range, target: buffer,
                         deadline: deadline, viaP2P: true)
        if r.status == 416 { return 0 }
        try check(r, url)
        if r.status == 200 {
            // A server that ignores Range sends the whole blob: only a request from 0 can use it.
            guard offset == 0 else { throw RegistryError.badResponse(url: url, detail: "the server ignored the Range header") }
            return r.copied
        }
        guard r.status == 206 else { throw RegistryError.http(url: url, status: r.status) }
        if let cr = r.headers["content-range"], !cr.hasPrefix("bytes \(offset)-") {
            throw RegistryError.badResponse(url: url, detail: "Content-Range '\(cr)' does not match the request")
        }
        if r.overflow { throw RegistryError.badResponse(url: url, detail: "more bytes than requested") }
        return r.copied
    }

    /// Whether the repository has the blob (HEAD).
    public func hasBlob(repository: String, digest: String, push: Bool = false) throws -> Bool {
        let url = blobURL(repository: repository, digest: digest)
        let r = try send(url: url, repository: repository, method: "HEAD", followRedirects: true, push: push)
        if r.status == 404 { return false }
        try check(r, url)
        return true
    }

    /// Asks the registry to mount a blob from another repository of the same registry
    /// (cross-repository mount); true if it did.
    public func mountBlob(repository: String, digest: String, from: String) throws -> Bool {
        let url = base + repository + "/blobs/uploads/?mount=\(Self.percentEncode(digest))&from=\(Self.percentEncode(from))"
        let empty: [UInt8] = []
        let r = try empty.withUnsafeBytes { try send(url: url, repository: repository, method: "POST", body: $0, push: true) }
        return r.status == 201
    }

    /// Uploads a blob from a file: one monolithic PUT up to `chunkSize` bytes, else a
    /// chunked upload (PATCH with Content-Range per chunk, then PUT with the digest), so a
    /// large blob is never held in memory whole. The registry checks the digest; a failed
    /// chunked upload is started over once.
    public func uploadBlob(repository: String, digest: String, file: any BlockFile, chunkSize: Int = 64 << 20) throws {
        if file.size <= UInt64(chunkSize) {
            let bytes = try file.readBytes(at: 0, count: Int(file.size))
            let loc = try startUpload(repository: repository)
            try finishUpload(repository: repository, location: loc, digest: digest, body: bytes)
            return
        }
        do {
            try chunkedUpload(repository: repository, digest: digest, file: file, chunkSize: chunkSize)
        } catch let e as RegistryError {
            if case .authenticationFailed = e { throw e }
            try chunkedUpload(repository: repository, digest: digest, file: file, chunkSize: chunkSize)
        }
    }

    private func chunkedUpload(repository: String, digest: String, file: any BlockFile, chunkSize: Int) throws {
        var loc = try startUpload(repository: repository)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < file.size {
            let n = Int(min(UInt64(chunkSize), file.size - off))
            let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try file.readExactly(into: part, at: off)
            let r = try send(url: loc, repository: repository, method: "PATCH",
                             headers: ["Content-Type: application/octet-stream", "Content-Range: \(off)-\(off + UInt64(n) - 1)"],
                             body: UnsafeRawBufferPointer(part), push: true)
            guard r.status == 202, let next = r.headers["location"] else {
                try check(r, loc)
                throw RegistryError.badResponse(url: HTTPTransport.redact(loc), detail: "chunk upload answered \(r.status)")
            }
            loc = absolute(next, relativeTo: loc)
            off += UInt64(n)
        }
        try finishUpload(repository: repository, location: loc, digest: digest, body: [])
    }

    /// Opens an upload session; returns its absolute Location.
    private func startUpload(repository: String) throws -> String {
        let start = base + repository + "/blobs/uploads/"
        let empty: [UInt8] = []
        let r = try empty.withUnsafeBytes { try send(url: start, repository: repository, method: "POST", body: $0, push: true) }
        guard r.status == 202, let loc = r.headers["location"] else {
            try check(r, start)
            throw RegistryError.badResponse(url: start, detail: "upload start answered \(r.status) without a Location")
        }
        return absolute(loc, relativeTo: start)
    }

    private func finishUpload(repository: String, location: String, digest: String, body: [UInt8]) throws {
        let put = location + (location.contains("?") ? "&" : "?") + "digest=" + Self.percentEncode(digest)
        let done = try body.withUnsafeBytes {
            try send(url: put, repository: repository, method: "PUT",
                     headers: ["Content-Type: application/octet-stream"], body: $0, push: true)
        }
        guard done.status == 201 else {
            try check(done, put)
            throw RegistryError.badResponse(url: HTTPTransport.redact(put), detail: "blob upload answered \(done.status)")
        }
    }

    /// Stores a manifest (or index) under `reference` (a tag or its digest).
    public func pushManifest(repository: String, reference: String, bytes: [UInt8], mediaType: String) throws {
        let url = base + repository + "/manifests/" + reference
        let r = try bytes.withUnsafeBytes {
            try send(url: url, repository: repository, method: "PUT", headers: ["Content-Type: " + mediaType], body: $0, push: true)
        }
        guard r.status == 201 || r.status == 200 else {
            try check(r, url)
            throw RegistryError.badResponse(url: url, detail: "manifest upload answered \(r.status)")
        }
    }

    /// Fetches a whole blob into memory (configs), checking its digest.
    public func blob(repository: String, digest: String, limit: Int = 64 << 20) throws -> [UInt8] {
        let url = blobURL(repository: repository, digest: digest)
        let r = try send(url: url, repository: repository, followRedirects: true)
        try check(r, url)
        if digest.hasPrefix("sha256:"), "sha256:" + SHA256Hex.of(r.body) != digest {
            throw RegistryError.badResponse(url: url, detail: "content does not match its digest")
        }
        return r.body
    }

    private func check(_ r: HTTPTransport.Response, _ url: String) throws {
        switch r.status {
        case 200, 206: return
        case 401, 403: throw RegistryError.authenticationFailed(url: url)
        case 404: throw RegistryError.notFound(url: url)
        case 429: throw RegistryError.tooManyRequests(url: url)
        default: throw RegistryError.http(url: url, status: r.status)
        }
    }

    /// The deadline of one operation on the monotonic clock. `patient` (blob range reads
    /// under `blockOnOutage`) lets retryable failures outlast it.
    struct Deadline {
        var at: Double
        var patient = false
        init(seconds: Int, patient: Bool = false) {
            at = monotonicSeconds() + Double(seconds)
            self.patient = patient
        }
    }

    /// Whether range reads may go through the P2P proxy now.
    private var p2pUsable: Bool { options.p2p != nil && p2pDownUntil.withLock { $0 } <= monotonicSeconds() }

    /// The P2P proxy failed (connection error, cut body): range reads of this client go to
    /// the registry directly for `p2pPause` seconds, then the proxy is tried again.
    private func p2pFailed(_ why: String) {
        RegistryMetrics.shared.p2pFallbacks.increment()
        let now = monotonicSeconds()
        let first = p2pDownUntil.withLock { d -> Bool in
            let wasUp = d <= now
            d = now + Self.p2pPause
            return wasUp
        }
        if first, let p = options.p2p {
            options.log?("P2P proxy \(p.address) failed (\(why)): range reads of \(host) go to the registry directly for \(Int(Self.p2pPause)) s")
        }
    }

    /// Reads the credential file again (after a 401 or 403); true if its credentials changed.
    private func reloadCredentials() -> Bool {
        guard let file = options.credentialFile else { return false }
        do { return try file.reload() } catch {
            options.log?("\(error); keeping the credentials read before")
            return false
        }
    }

    /// Sends a request with auth, retries and (optionally) redirects. Retryable failures
    /// (connection errors, timeouts, 429, 5xx, a token server that does not answer, stale
    /// redirect targets) are retried with backoff and jitter until `deadline` (by default
    /// `options.timeoutSeconds` from now): one deadline for the whole operation, as
    /// overlaybd does. With `viaP2P`, the request goes through the P2P proxy when there is
    /// one that works, and to the registry directly when the proxy fails.
    private func send(url: String, repository: String, method: String = "GET", headers: [String] = [],
                      followRedirects: Bool = false, range: Range<UInt64>? = nil,
                      target: UnsafeMutableRawBufferPointer? = nil, body: UnsafeRawBufferPointer? = nil,
                      push: Bool = false, deadline given: Deadline? = nil, viaP2P: Bool = false) throws -> HTTPTransport.Response {
        let scope = "repository:\(repository):" + (push ? "pull,push" : "pull")
        let deadline = given ?? Deadline(seconds: options.timeoutSeconds)
        var attempt = 0
        var authRetried = false
        var staleTargets = 0
        var hops = 0
        var p2p = viaP2P && range != nil && method == "GET" && p2pUsable ? options.p2p : nil
        var target0 = url
        if followRedirects, let r = resolved.withLock({ $0[url] }), r.expires > monotonicSeconds() { target0 = r.url }
        /// Waits before the next attempt; false when the deadline leaves no room for one.
        /// An `outage` failure of a patient operation is always tried again.
        func retryAllowed(outage: Bool) -> Bool {
            let left = deadline.at - monotonicSeconds() - 0.05
            if outage && deadline.patient && (left <= 0.01 || attempt >= options.attempts) {
                usleep(UInt32(backoffDelay(attempt, cap: 4) * 1e6))
                return true
            }
            guard attempt < options.attempts, left > 0.01 else { return false }
            // The last pause is shortened so that one more try fits before the deadline.
            usleep(UInt32(min(backoffDelay(attempt, cap: 1), left) * 1e6))
            return true
        }
        /// The error of a retryable failure that may not be retried any more.
        func finalError(_ e: RegistryError) -> RegistryError {
            monotonicSeconds() >= deadline.at - 0.06 ? .timeout(url: HTTPTransport.redact(url)) : e
        }
        while true {
            attempt += 1
            var remaining = deadline.at - monotonicSeconds()
            if remaining <= 0 {
                guard deadline.patient else { throw RegistryError.timeout(url: HTTPTransport.redact(url)) }
                remaining = Double(options.timeoutSeconds)
            }
            // A P2P try gets at most half the time left, so a hung proxy leaves room for
            // the registry.
            let tryTime = p2p == nil ? remaining : max(1, remaining / 2)
            var request = HTTPTransport.Request(url: p2p?.url(for: target0) ?? target0, method: method, headers: headers + [userAgent],
                                                range: range, timeoutMilliseconds: Int(tryTime * 1000) + 1, body: body)
            let sameHost = target0 == url || target0.hasPrefix(base)
            if sameHost, let auth = authorization(scope: scope, repository: repository) { request.headers.append(auth) }
            let response: HTTPTransport.Response
            do {
                requestCount.add(1, ordering: .relaxed)
                if p2p != nil { RegistryMetrics.shared.p2pFetches.increment() }
                response = try transport.perform(request, into: target)
            } catch let e as RegistryError {
                RegistryMetrics.shared.errors(kind: e.kind).increment()
                if p2p != nil {
                    p2pFailed(e.reason)
                    p2p = nil
                    continue
                }
                if case .tlsFailed = e { throw e }
                if retryAllowed(outage: e.isRetryable) { continue }
                throw finalError(e)
            }
            if p2p != nil {
                if response.partial {
                    // The bytes that arrived are good; the rest comes from the registry.
                    p2pFailed("the connection broke after \(response.copied) bytes")
                } else if ![200, 206, 301, 302, 303, 307, 308, 401, 416].contains(response.status) {
                    RegistryMetrics.shared.p2pFallbacks.increment()
                    p2p = nil
                    continue
                }
            }
            if (301...308).contains(response.status) { hops += 1 } else { hops = 0 }
            switch response.status {
            case 401 where sameHost && !authRetried:
                authRetried = true
                tokens.withLock { _ = $0.removeValue(forKey: scope) }
                // A rotated secret: the credential file is read again before answering.
                _ = reloadCredentials()
                do {
                    try authenticate(challenges: response.challenges, scope: scope, repository: repository, url: url,
                                     timeout: remaining)
                } catch let e as RegistryError where e.isRetryable {
                    // The token server did not answer: under the same deadline as the rest.
                    RegistryMetrics.shared.errors(kind: e.kind).increment()
                    authRetried = false
                    if retryAllowed(outage: true) { continue }
                    throw finalError(e)
                }
                continue
            case 403 where sameHost && !authRetried:
                // Denied: if the credential file changed meanwhile, try once with the new secret.
                authRetried = true
                guard reloadCredentials() else { return response }
                tokens.withLock { _ = $0.removeValue(forKey: scope) }
                continue
            case 401 where target0 != url, 403 where target0 != url, 404 where target0 != url:
                // A HEAD refused by the redirect target (a pre-signed URL signs GET only) is
                // the caller's to handle.
                if method == "HEAD" { return response }
                // A stale redirect target (an expired pre-signed URL): resolve again, at once
                // the first time, then with backoff.
                resolved.withLock { _ = $0.removeValue(forKey: url) }
                target0 = url
                staleTargets += 1
                if staleTargets == 1 || retryAllowed(outage: false) { continue }
                return response
            case 301 where followRedirects, 302 where followRedirects, 303 where followRedirects,
                 307 where followRedirects, 308 where followRedirects:
                guard let loc = response.headers["location"] else {
                    throw RegistryError.badResponse(url: url, detail: "redirect without a location")
                }
                guard hops <= 10 else { throw RegistryError.badResponse(url: url, detail: "more than 10 redirects in a row") }
                let next = absolute(loc, relativeTo: target0)
                resolved.withLock { $0[url] = (next, monotonicSeconds() + 300) }
                target0 = next
                continue
            case 429, 500...599:
                RegistryMetrics.shared.errors(kind: response.status == 429 ? "throttled" : "server").increment()
                if retryAllowed(outage: true) { continue }
                return response
            default:
                if response.partial { RegistryMetrics.shared.errors(kind: "cut").increment() }
                return response
            }
        }
    }

    /// A User-Agent like overlaybd's.
    private let userAgent = "User-Agent: obd/0.1"

    private func absolute(_ location: String, relativeTo url: String) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        let chars = Array(url)
        var i = 0
        while i + 2 < chars.count && !(chars[i] == ":" && chars[i + 1] == "/" && chars[i + 2] == "/") { i += 1 }
        var j = i + 3
        while j < chars.count && chars[j] != "/" { j += 1 }
        return String(chars[0..<min(j, chars.count)]) + (location.hasPrefix("/") ? location : "/" + location)
    }

    /// 50 ms doubling per attempt, at most `cap` seconds, plus up to 50% jitter.
    private func backoffDelay(_ attempt: Int, cap: Double) -> Double {
        let base = min(cap, 0.05 * Double(1 << min(attempt - 1, 7)))
        return base + Double.random(in: 0...(base / 2))
    }

    private func authorization(scope: String, repository: String) -> String? {
        if let t = tokens.withLock({ $0[scope] }), t.expires > monotonicSeconds() { return "Authorization: Bearer " + t.value }
        if basicHosts.withLock({ $0.contains(host) }), let c = credential(repository: repository) {
            return "Authorization: Basic " + Data("\(c.username):\(c.password)".utf8).base64EncodedString()
        }
        return nil
    }

    /// The credential for `repository`: from the credential file as read last, else the
    /// fixed credentials of the options.
    private func credential(repository: String) -> Credential? {
        (options.credentialFile?.store ?? options.credentials).credential(host: host, repository: repository)
    }

    /// Answers a WWW-Authenticate challenge: Basic (use credentials) or Bearer (fetch a
    /// token, within `timeout` seconds). A token server that does not answer, or answers
    /// 429 or 5xx, gives a retryable error; one that refuses gives `authenticationFailed`.
    private func authenticate(challenges: [String], scope: String, repository: String, url: String, timeout: Double) throws {
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

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E {
                out.append(Character(Unicode.Scalar(b)))
            } else {
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
    func trimmingCharacters() -> String { Substring(self).trimmingWhitespace() }
}
