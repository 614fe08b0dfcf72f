import BlockIO
import FoundationEssentials
import Glibc
import Synchronization

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

    /// The size of a blob (HEAD, following redirects).
    public func blobSize(repository: String, digest: String) throws -> UInt64 {
        let url = blobURL(repository: repository, digest: digest)
        let r = try send(url: url, repository: repository, method: "HEAD", followRedirects: true)
        try check(r, url)
        guard let len = r.headers["content-length"].flatMap(UInt64.init) else {
            throw RegistryError.badResponse(url: url, detail: "no Content-Length")
        }
        return len
    }

    /// Reads `buffer.count` bytes of a blob at `offset` with HTTP Range requests.
    /// Returns the bytes read (fewer only at the end of the blob). A response shorter
    /// than asked (a server or proxy that cut the body) is continued from where it stopped.
    public func readBlob(repository: String, digest: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let started = monotonicSeconds()
        var done = 0
        while done < buffer.count {
            let n = try readOnce(repository: repository, digest: digest, offset: offset + UInt64(done),
                                 into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        let m = RegistryMetrics.shared
        m.fetches.increment()
        m.fetchBytes.increment(by: done)
        m.fetchLatency.recordNanoseconds(Int64((monotonicSeconds() - started) * 1e9))
        return done
    }

    private func readOnce(repository: String, digest: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        let url = blobURL(repository: repository, digest: digest)
        let range = offset..<(offset + UInt64(buffer.count))
        let r = try send(url: url, repository: repository, followRedirects: true, range: range, target: buffer)
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

    /// Sends a request with auth, retries and (optionally) redirects. Retryable failures
    /// (connection errors, timeouts, 429, 5xx, stale redirect targets) are retried with
    /// backoff and jitter until `options.timeoutSeconds` have passed since the first try:
    /// one deadline for the whole operation, as overlaybd does.
    private func send(url: String, repository: String, method: String = "GET", headers: [String] = [],
                      followRedirects: Bool = false, range: Range<UInt64>? = nil,
                      target: UnsafeMutableRawBufferPointer? = nil, body: UnsafeRawBufferPointer? = nil,
                      push: Bool = false) throws -> HTTPTransport.Response {
        let scope = "repository:\(repository):" + (push ? "pull,push" : "pull")
        let deadline = monotonicSeconds() + Double(options.timeoutSeconds)
        var attempt = 0
        var authRetried = false
        var target0 = url
        if followRedirects, let r = resolved.withLock({ $0[url] }), r.expires > monotonicSeconds() { target0 = r.url }
        /// Waits before the next attempt; false when the deadline leaves no room for one.
        func retryAllowed() -> Bool {
            guard attempt < options.attempts else { return false }
            // The last pause is shortened so that one more try fits before the deadline.
            let left = deadline - monotonicSeconds() - 0.05
            guard left > 0.01 else { return false }
            usleep(UInt32(min(backoffDelay(attempt), left) * 1e6))
            return true
        }
        while true {
            attempt += 1
            let remaining = deadline - monotonicSeconds()
            guard remaining > 0 else { throw RegistryError.timeout(url: HTTPTransport.redact(url)) }
            var request = HTTPTransport.Request(url: target0, method: method, headers: headers + [userAgent], range: range,
                                                timeoutMilliseconds: Int(remaining * 1000) + 1, body: body)
            let sameHost = target0 == url || target0.hasPrefix(base)
            if sameHost, let auth = authorization(scope: scope, repository: repository) { request.headers.append(auth) }
            let response: HTTPTransport.Response
            do {
                requestCount.add(1, ordering: .relaxed)
                response = try transport.perform(request, into: target)
            } catch let e as RegistryError {
                RegistryMetrics.shared.errors(kind: e.kind).increment()
                if case .tlsFailed = e { throw e }
                if retryAllowed() { continue }
                if monotonicSeconds() >= deadline - 0.01 { throw RegistryError.timeout(url: HTTPTransport.redact(url)) }
                throw e
            }
            switch response.status {
            case 401 where sameHost && !authRetried:
                authRetried = true
                tokens.withLock { _ = $0.removeValue(forKey: scope) }
                try authenticate(challenges: response.challenges, scope: scope, repository: repository, url: url)
                continue
            case 401 where target0 != url, 403 where target0 != url, 404 where target0 != url:
                // A stale redirect target (an expired pre-signed URL): resolve again.
                resolved.withLock { _ = $0.removeValue(forKey: url) }
                target0 = url
                if attempt < options.attempts { continue }
                return response
            case 301 where followRedirects, 302 where followRedirects, 303 where followRedirects,
                 307 where followRedirects, 308 where followRedirects:
                guard let loc = response.headers["location"], attempt < options.attempts + 5 else {
                    throw RegistryError.badResponse(url: url, detail: "redirect without a location")
                }
                let next = absolute(loc, relativeTo: target0)
                resolved.withLock { $0[url] = (next, monotonicSeconds() + 300) }
                target0 = next
                continue
            case 429, 500...599:
                RegistryMetrics.shared.errors(kind: response.status == 429 ? "throttled" : "server").increment()
                if retryAllowed() { continue }
                return response
            default:
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

    /// 50 ms doubling per attempt, at most 1 s, plus up to 50% jitter.
    private func backoffDelay(_ attempt: Int) -> Double {
        let base = min(1.0, 0.05 * Double(1 << min(attempt - 1, 6)))
        return base + Double.random(in: 0...(base / 2))
    }

    private func authorization(scope: String, repository: String) -> String? {
        if let t = tokens.withLock({ $0[scope] }), t.expires > monotonicSeconds() { return "Authorization: Bearer " + t.value }
        if basicHosts.withLock({ $0.contains(host) }), let c = options.credentials.credential(host: host, repository: repository) {
            return "Authorization: Basic " + Data("\(c.username):\(c.password)".utf8).base64EncodedString()
        }
        return nil
    }

    /// Answers a WWW-Authenticate challenge: Basic (use credentials) or Bearer (fetch a token).
    private func authenticate(challenges: [String], scope: String, repository: String, url: String) throws {
        let cred = options.credentials.credential(host: host, repository: repository)
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
                let r = try transport.perform(HTTPTransport.Request(url: q, headers: headers, timeoutMilliseconds: options.timeoutSeconds * 1000))
                guard r.status == 200 else { throw RegistryError.authenticationFailed(url: url) }
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
