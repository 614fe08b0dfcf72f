import Glibc
import Threading

/// The request loop: one deadline per operation, retries with backoff, redirects, P2P
/// routing of range reads, and status checks.
extension RegistryClient {
    /// Sends a request with auth, retries and (optionally) redirects. Retryable failures
    /// (connection errors, timeouts, 429, 5xx, a token server that does not answer, stale
    /// redirect targets) are retried with backoff and jitter until `deadline` (by default
    /// `options.timeoutSeconds` from now): one deadline for the whole operation, as
    /// overlaybd does. With `viaP2P`, the request goes through the P2P proxy when there is
    /// one that works, and to the registry directly when the proxy fails.
    func send(url: String, repository: String, method: String = "GET", headers: [String] = [],
              followRedirects: Bool = false, range: Range<UInt64>? = nil,
              target: UnsafeMutableRawBufferPointer? = nil, stream: HTTPTransport.BodyStream? = nil,
              body: UnsafeRawBufferPointer? = nil,
              push: Bool = false, deadline given: Deadline? = nil, viaP2P: Bool = false) throws -> HTTPTransport.Response {
        let scope = "repository:\(repository):" + (push ? "pull,push" : "pull")
        let deadline = given ?? Deadline(seconds: options.timeoutSeconds)
        var attempt = 0
        // The work this request is done for (a device's reads): once cancelled, no new
        // attempt, no more backoff, and the transfer in progress aborts.
        let token = CancellationToken.current
        let cancelCheck: (@Sendable () -> Bool)? = token.map { t in { @Sendable in t.isCancelled } }
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
                return pause(backoffDelay(attempt, cap: 4))
            }
            guard attempt < options.attempts, left > 0.01 else { return false }
            // The last pause is shortened so that one more try fits before the deadline.
            return pause(min(backoffDelay(attempt, cap: 1), left))
        }
        /// Sleeps `seconds` in slices, ending early when the work is cancelled (the
        /// loop's next turn then ends the operation with `.cancelled`).
        func pause(_ seconds: Double) -> Bool {
            let until = monotonicSeconds() + seconds
            while token?.isCancelled != true {
                let left = until - monotonicSeconds()
                if left <= 0 { break }
                usleep(UInt32(min(left, 0.1) * 1e6))
            }
            return true
        }
        /// The error of a retryable failure that may not be retried any more.
        func finalError(_ e: RegistryError) -> RegistryError {
            if token?.isCancelled == true { return .cancelled(url: HTTPTransport.redact(url)) }
            return monotonicSeconds() >= deadline.at - 0.06 ? .timeout(url: HTTPTransport.redact(url)) : e
        }
        while true {
            if token?.isCancelled == true { throw RegistryError.cancelled(url: HTTPTransport.redact(url)) }
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
                                                range: range, timeoutMilliseconds: Int(tryTime * 1000) + 1, body: body,
                                                isCancelled: cancelCheck)
            let sameHost = target0 == url || target0.hasPrefix(base)
            if sameHost, let auth = authorization(scope: scope, repository: repository) { request.headers.append(auth) }
            let response: HTTPTransport.Response
            do {
                requestCount.add(1, ordering: .relaxed)
                if p2p != nil { RegistryMetrics.shared.p2pFetches.increment() }
                response = try transport.perform(request, into: target, stream: stream)
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

    func check(_ r: HTTPTransport.Response, _ url: String) throws {
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
    var p2pUsable: Bool { options.p2p != nil && p2pDownUntil.withLock { $0 } <= monotonicSeconds() }

    /// The P2P proxy failed (connection error, cut body): range reads of this client go to
    /// the registry directly for `p2pPause` seconds, then the proxy is tried again.
    func p2pFailed(_ why: String) {
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

    func absolute(_ location: String, relativeTo url: String) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        let chars = Array(url)
        var i = 0
        while i + 2 < chars.count && !(chars[i] == ":" && chars[i + 1] == "/" && chars[i + 2] == "/") { i += 1 }
        var j = i + 3
        while j < chars.count && chars[j] != "/" { j += 1 }
        return String(chars[0..<min(j, chars.count)]) + (location.hasPrefix("/") ? location : "/" + location)
    }

    /// 50 ms doubling per attempt, at most `cap` seconds, plus up to 50% jitter.
    func backoffDelay(_ attempt: Int, cap: Double) -> Double {
        let base = min(cap, 0.05 * Double(1 << min(attempt - 1, 7)))
        return base + Double.random(in: 0...(base / 2))
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
