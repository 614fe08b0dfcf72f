import BlockIO
import CCurl
import Glibc
import Threading

/// One HTTP exchange over libcurl: a per-thread easy handle, run on the process's
/// multi handle (so transfers overlap and connections are reused). Redirects are not followed here: the registry client follows them itself
/// so that credentials never go to another host.
final class HTTPTransport: @unchecked Sendable {
    struct Request {
        var url: String
        var method = "GET"
        var headers: [String] = []
        var range: Range<UInt64>?
        var timeoutMilliseconds = 30_000
        /// Request body (uploads), sent with the method given; the caller keeps it alive
        /// until `perform` returns.
        var body: UnsafeRawBufferPointer?
        /// Polled during the transfer (about once a second, and with every piece of
        /// body): true aborts it with `RegistryError.cancelled`.
        var isCancelled: (@Sendable () -> Bool)?
    }

    struct Response {
        var status = 0
        /// Header values by lower-cased name (the last one wins).
        var headers: [String: String] = [:]
        var challenges: [String] = []
        var body: [UInt8] = []
        /// Bytes written into the caller's buffer (range reads).
        var copied = 0
        var overflow = false
        /// The connection broke after `copied` bytes of a 200/206 body had arrived in the
        /// caller's buffer (a reset, a cut body, a proxy that died): those bytes are good
        /// and a range read continues after them.
        var partial = false
    }

    struct Options: Sendable {
        var verifyTLS = true
        var caFile: String?
        var clientCert: String?
        var clientKey: String?
        var connectTimeoutSeconds = 10
    }

    /// A range body handed on in pieces as it arrives, instead of into one buffer: a
    /// cache writes each piece out at once. Bytes reach `deliver` only from a response
    /// that carries the range asked for (206 with a matching Content-Range, or 200 for a
    /// range from 0); any other body is kept in memory for the error message.
    struct BodyStream {
        /// First byte of the range requested.
        var offset: UInt64
        /// Bytes the caller takes at most; more is an overflow.
        var capacity: Int
        var deliver: (UnsafeRawBufferPointer) throws -> Void
    }

    let options: Options

    private final class Handle {
        let curl: UnsafeMutableRawPointer?
        init() { curl = curl_easy_init() }
        deinit { curl_easy_cleanup(curl) }
    }

    private static let handles = ThreadLocal { Handle() }
    static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    init(options: Options) {
        _ = HTTPTransport.globalInit
        self.options = options
    }

    /// Collects the body (into `target` when given, else into memory up to `limit`).
    private final class Sink {
        var response = Response()
        let target: UnsafeMutableRawBufferPointer?
        let stream: BodyStream?
        let limit: Int
        let curl: UnsafeMutableRawPointer
        /// Whether this response's body goes to `stream` (decided at its first byte).
        var streaming: Bool?
        var streamError: (any Error)?
        let isCancelled: (@Sendable () -> Bool)?
        init(target: UnsafeMutableRawBufferPointer?, stream: BodyStream?, limit: Int, curl: UnsafeMutableRawPointer,
             isCancelled: (@Sendable () -> Bool)?) {
            self.target = target; self.stream = stream; self.limit = limit; self.curl = curl; self.isCancelled = isCancelled
        }

        /// Whether the response being received carries `stream`'s range.
        func carriesStreamRange(_ s: BodyStream) -> Bool {
            var status = 0
            obd_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
            if status == 200 { return s.offset == 0 }
            guard status == 206, let cr = response.headers["content-range"] else { return false }
            return cr.hasPrefix("bytes \(s.offset)-")
        }

        /// Takes one piece of the body; false stops the transfer.
        func take(_ data: UnsafeRawPointer, _ n: Int) -> Bool {
            if let s = stream {
                if streaming == nil { streaming = carriesStreamRange(s) }
                if streaming == true {
                    let room = s.capacity - response.copied
                    let k = min(n, room)
                    do { try s.deliver(UnsafeRawBufferPointer(start: data, count: k)) } catch {
                        streamError = error
                        return false
                    }
                    response.copied += k
                    if n > room { response.overflow = true; return false }
                    return true
                }
            } else if let t = target {
                let room = t.count - response.copied
                if n > room { response.overflow = true; return false }
                (t.baseAddress! + response.copied).copyMemory(from: data, byteCount: n)
                response.copied += n
                return true
            }
            if response.body.count + n > limit { response.overflow = true; return false }
            response.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n))
            return true
        }
    }

    /// Performs `request`; the body goes into `target` if given (never past its end), or
    /// piece by piece to `stream`.
    func perform(_ request: Request, into target: UnsafeMutableRawBufferPointer? = nil, stream: BodyStream? = nil,
                 limit: Int = 64 << 20) throws -> Response {
        let handle = HTTPTransport.handles.value
        guard let c = handle.curl else { throw RegistryError.connectionFailed(url: request.url, detail: "curl_easy_init failed") }
        curl_easy_reset(c)
        let sink = Sink(target: target, stream: stream, limit: limit, curl: c, isCancelled: request.isCancelled)
        let box = Unmanaged.passRetained(sink)
        defer { box.release() }
        var headers: UnsafeMutablePointer<curl_slist>?
        for h in request.headers { headers = curl_slist_append(headers, h) }
        defer { curl_slist_free_all(headers) }
        let rangeText = request.range.map { "\($0.lowerBound)-\($0.upperBound - 1)" }
        let rc: CURLcode = request.url.withCString { url in
            (rangeText ?? "").withCString { range in
                (options.caFile ?? "").withCString { ca in
                    (options.clientCert ?? "").withCString { cert in
                        (options.clientKey ?? "").withCString { key in
                            request.method.withCString { method in
                                obd_curl_setopt_ptr(c, CURLOPT_URL, url)
                                obd_curl_setopt_long(c, CURLOPT_NOSIGNAL, 1)
                                // Large receive buffer: fewer recv calls and callbacks per MiB.
                                obd_curl_setopt_long(c, CURLOPT_BUFFERSIZE, 512 * 1024)
                                obd_curl_setopt_long(c, CURLOPT_FOLLOWLOCATION, 0)
                                obd_curl_setopt_long(c, CURLOPT_CONNECTTIMEOUT, options.connectTimeoutSeconds)
                                obd_curl_setopt_long(c, CURLOPT_TIMEOUT_MS, request.timeoutMilliseconds)
                                obd_curl_setopt_long(c, CURLOPT_SSL_VERIFYPEER, options.verifyTLS ? 1 : 0)
                                obd_curl_setopt_long(c, CURLOPT_SSL_VERIFYHOST, options.verifyTLS ? 2 : 0)
                                if options.caFile != nil { obd_curl_setopt_ptr(c, CURLOPT_CAINFO, ca) }
                                if options.clientCert != nil { obd_curl_setopt_ptr(c, CURLOPT_SSLCERT, cert) }
                                if options.clientKey != nil { obd_curl_setopt_ptr(c, CURLOPT_SSLKEY, key) }
                                if request.method == "HEAD" {
                                    obd_curl_setopt_long(c, CURLOPT_NOBODY, 1)
                                } else if request.method != "GET" {
                                    obd_curl_setopt_ptr(c, CURLOPT_CUSTOMREQUEST, method)
                                }
                                if let body = request.body {
                                    obd_curl_setopt_off(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
                                    obd_curl_setopt_ptr(c, CURLOPT_POSTFIELDS, body.baseAddress ?? UnsafeRawPointer(("" as StaticString).utf8Start))
                                }
                                if rangeText != nil { obd_curl_setopt_ptr(c, CURLOPT_RANGE, range) }
                                obd_curl_setopt_ptr(c, CURLOPT_HTTPHEADER, headers.map { UnsafeRawPointer($0) })
                                obd_curl_setopt_write(c) { data, size, count, user in
                                    let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
                                    let n = size * count
                                    guard n > 0, let data else { return n }
                                    return sink.take(UnsafeRawPointer(data), n) ? n : 0
                                }
                                obd_curl_setopt_ptr(c, CURLOPT_WRITEDATA, box.toOpaque())
                                obd_curl_setopt_header(c) { data, size, count, user in
                                    let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
                                    let n = size * count
                                    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
                                    if line.hasPrefix("HTTP/") {
                                        sink.streaming = nil
                                        sink.response.headers = [:]
                                        sink.response.challenges = []
                                    } else if let colon = line.firstIndex(of: ":") {
                                        let name = line[..<colon].lowercased()
                                        let value = line[line.index(after: colon)...].trimmingWhitespace()
                                        sink.response.headers[name] = value
                                        if name == "www-authenticate" { sink.response.challenges.append(value) }
                                    }
                                    return n
                                }
                                obd_curl_setopt_ptr(c, CURLOPT_HEADERDATA, box.toOpaque())
                                if request.isCancelled != nil {
                                    obd_curl_setopt_long(c, CURLOPT_NOPROGRESS, 0)
                                    obd_curl_setopt_xferinfo(c) { user, _, _, _, _ in
                                        let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
                                        return sink.isCancelled?() == true ? 1 : 0
                                    }
                                    obd_curl_setopt_ptr(c, CURLOPT_XFERINFODATA, box.toOpaque())
                                }
                                return CurlMulti.shared.perform(c)
                            }
                        }
                    }
                }
            }
        }
        var status: Int = 0
        obd_curl_getinfo_long(c, CURLINFO_RESPONSE_CODE, &status)
        sink.response.status = status
        if let e = sink.streamError { throw e }
        if rc == CURLE_ABORTED_BY_CALLBACK { throw RegistryError.cancelled(url: HTTPTransport.redact(request.url)) }
        if rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && sink.response.overflow) {
            if target != nil || sink.streaming == true, sink.response.copied > 0, status == 200 || status == 206,
               rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_OPERATION_TIMEDOUT {
                sink.response.partial = true
                return sink.response
            }
            if rc == CURLE_OPERATION_TIMEDOUT { throw RegistryError.timeout(url: HTTPTransport.redact(request.url)) }
            if rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM
                || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH {
                throw RegistryError.tlsFailed(url: HTTPTransport.redact(request.url), detail: String(cString: curl_easy_strerror(rc)))
            }
            throw RegistryError.connectionFailed(url: HTTPTransport.redact(request.url), detail: String(cString: curl_easy_strerror(rc)))
        }
        return sink.response
    }

    /// A URL without its query string (pre-signed URLs carry secrets there).
    static func redact(_ url: String) -> String {
        guard let q = url.firstIndex(of: "?") else { return url }
        return String(url[..<q]) + "?<redacted>"
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        var s = self
        // ("\r\n" is one Character in Swift: test with isWhitespace.)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
