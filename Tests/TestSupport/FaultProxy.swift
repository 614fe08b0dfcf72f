import BlockIO
import FoundationEssentials
import Glibc
import Synchronization
import Threading

/// An HTTP proxy on loopback between obd and a registry that injects faults: delays,
/// error statuses, connections reset or bodies cut mid-way, and redirects to another
/// host. One request per connection (it answers `Connection: close`). Counts what
/// passes so tests can assert on requests and bytes.
///
/// In forwarding mode (`init(forwardingPrefix:)`) it stands for a P2P proxy such as
/// dfdaemon: it is asked for `<prefix>/<full URL>` and fetches that URL itself.
public final class FaultProxy: @unchecked Sendable {
    /// What to do with one request.
    public enum Fault: Sendable, Equatable {
        case pass
        case delay(milliseconds: Int)
        case status(Int)
        /// Sends the head and this many body bytes, then resets the connection (RST).
        case reset(afterBytes: Int)
        /// Sends the head and this many body bytes, then closes normally (short body).
        case truncate(afterBytes: Int)
        /// Flips one bit of the body's first byte (a bad cache or middlebox).
        case corrupt
        /// Answers 307 to the same path on `base` (e.g. "http://127.0.0.2:1234").
        case redirect(base: String)
        /// Closes the connection without answering.
        case drop
        /// Forwards the request with its Range cut to at most this many bytes: a valid but
        /// shorter 206 than asked.
        case shortRange(bytes: Int)
        /// Forwards the request without its Range header: the whole blob comes back as a
        /// 200 (a server or middlebox that ignores ranges).
        case ignoreRange
        /// Sends the head and this many body bytes, then the whole proxy dies: the
        /// listener closes and every open connection is reset.
        case die(afterBytes: Int)
    }

    /// One request as seen by the proxy.
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var headers: [String: String]
        public var isBlobRead: Bool { method == "GET" && path.contains("/blobs/") }
        public var range: String? { headers["range"] }
    }

    public let port: UInt16
    public let bindAddress: String
    /// The registry port (0 in forwarding mode).
    public let upstreamPort: UInt16
    /// Forwarding mode: the path prefix before the full URL (e.g. "/accelerator").
    public let forwardingPrefix: String?
    private let fd: Int32
    /// Client connections being served (closed under this lock, so `kill` never touches a
    /// reused descriptor).
    private let openClients = Mutex<Set<Int32>>([])
    /// Text replaced in every forwarded response head (e.g. a token realm).
    private let headRewrites = Mutex<[(String, String)]>([])
    private let stopped = Atomic<Bool>(false)
    private let policy: Mutex<@Sendable (Request, Int) -> Fault>
    private let stats = Mutex<(requests: Int, blobReads: Int, bodyBytes: Int, withAuth: Int)>((0, 0, 0, 0))
    /// Headers added to every forwarded request (e.g. credentials of a pre-signed URL).
    private let extraHeaders: [String]
    /// Latency added to every request, in milliseconds.
    public let latencyMs = Atomic<Int>(0)
    private let active = Atomic<Int>(0)
    private let peak = Atomic<Int>(0)
    /// Most requests the proxy was handling at one moment (shows whether a client overlaps them).
    public var peakConcurrentRequests: Int { peak.load(ordering: .relaxed) }

    public var base: String { "http://\(bindAddress):\(port)" }
    /// Forwarding mode: the address to configure as the P2P proxy (`p2pConfig.address`).
    public var address: String { base + (forwardingPrefix ?? "") }
    /// Whether the proxy has stopped (or died).
    public var isStopped: Bool { stopped.load(ordering: .relaxed) }
    public var host: String { "\(bindAddress):\(port)" }

    /// Counters: requests seen, blob GETs, body bytes sent to clients, requests carrying Authorization.
    public var requests: Int { stats.withLock { $0.requests } }
    public var blobReads: Int { stats.withLock { $0.blobReads } }
    public var bodyBytes: Int { stats.withLock { $0.bodyBytes } }
    public var requestsWithAuthorization: Int { stats.withLock { $0.withAuth } }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// A P2P-style forwarding proxy: `GET <prefix>/http://host:port/path` is sent to
    /// `host:port` (an IPv4 address or `localhost`) as `GET /path`.
    public convenience init(forwardingPrefix: String, bindAddress: String = "127.0.0.1") throws {
        try self.init(upstreamPort: 0, bindAddress: bindAddress, forwardingPrefix: forwardingPrefix)
    }

    public init(upstreamPort: UInt16, bindAddress: String = "127.0.0.1", extraHeaders: [String] = [],
                forwardingPrefix: String? = nil) throws {
        self.upstreamPort = upstreamPort
        self.forwardingPrefix = forwardingPrefix
        self.bindAddress = bindAddress
        self.extraHeaders = extraHeaders
        policy = Mutex({ _, _ in .pass })
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(bindAddress)
        addr.sin_port = 0
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(s, 128) == 0 else { close(s); throw Failure(description: "proxy bind failed: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        fd = s
        try NamedThread.detach(name: "fault-proxy") { [self] in acceptLoop() }
    }

    deinit { stop() }

    public func stop() {
        if stopped.exchange(true, ordering: .relaxed) { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    /// Sets the fault policy: called for every request with its number (from 0).
    public func setPolicy(_ p: @escaping @Sendable (Request, Int) -> Fault) { policy.withLock { $0 = p } }

    /// Replaces `text` with `replacement` in the head of every forwarded response.
    public func rewriteResponses(replacing text: String, with replacement: String) {
        headRewrites.withLock { $0.append((text, replacement)) }
    }

    /// Stops listening and resets every open connection (a proxy process that dies).
    public func kill() {
        stop()
        openClients.withLock { set in
            for c in set {
                var l = linger(l_onoff: 1, l_linger: 0)
                setsockopt(c, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                shutdown(c, Int32(SHUT_RDWR))
            }
        }
    }

    public func resetCounters() {
        stats.withLock { $0 = (0, 0, 0, 0) }
        peak.store(0, ordering: .relaxed)
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let c = retryingInterrupted { accept(fd, nil, nil) }
            if c < 0 {
                return
            }
            openClients.withLock { _ = $0.insert(c) }
            if (try? NamedThread.detach(name: "fault-proxy-conn", { [self] in handle(c) })) == nil { closeClient(c) }
        }
    }

    private func readHead(_ s: Int32) -> [UInt8]? {
        var head = [UInt8]()
        var b: UInt8 = 0
        while head.count < 65536 {
            let n = recv(s, &b, 1, 0)
            if n <= 0 { return nil }
            head.append(b)
            if head.count >= 4 && head[head.count - 4..<head.count].elementsEqual([13, 10, 13, 10]) { return head }
        }
        return nil
    }

    private func closeClient(_ c: Int32) {
        openClients.withLock { set in
            set.remove(c)
            close(c)
        }
    }

    private func handle(_ c: Int32) {
        defer { closeClient(c) }
        guard let head = readHead(c) else { return }
        _ = peak.max(active.add(1, ordering: .relaxed).newValue, ordering: .relaxed)
        defer { active.subtract(1, ordering: .relaxed) }
        var lines = String(decoding: head, as: UTF8.self).split(separator: "\r\n").map(String.init)
        guard var first = lines.first else { return }
        let parts = first.split(separator: " ")
        guard parts.count >= 2 else { return }
        var headers: [String: String] = [:]
        for l in lines.dropFirst() {
            if let colon = l.firstIndex(of: ":") {
                headers[l[..<colon].lowercased()] = String(l[l.index(after: colon)...]).trimmingCharacters()
            }
        }
        let request = Request(method: String(parts[0]), path: String(parts[1]), headers: headers)
        // Forwarding mode: where the full URL in the path points.
        var upstream = (host: "127.0.0.1", port: upstreamPort)
        if let prefix = forwardingPrefix {
            guard let target = FaultProxy.forwardTarget(request.path, prefix: prefix) else {
                sendAll(c, Array("HTTP/1.1 400 Not a proxy URL\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
                return
            }
            upstream = (target.host, target.port)
            first = "\(parts[0]) \(target.path) HTTP/1.1"
            lines = lines.map { $0.lowercased().hasPrefix("host:") ? "Host: \(target.authority)" : $0 }
        }
        let number: Int = stats.withLock { s in
            let n = s.requests
            s.requests += 1
            if request.isBlobRead { s.blobReads += 1 }
            if headers["authorization"] != nil { s.withAuth += 1 }
            return n
        }
        let fault = policy.withLock { $0 }(request, number)
        let latency = latencyMs.load(ordering: .relaxed)
        if latency > 0 { usleep(UInt32(latency * 1000)) }
        switch fault {
        case let .delay(ms): usleep(UInt32(ms * 1000))
        case let .status(code):
            sendAll(c, Array("HTTP/1.1 \(code) Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            return
        case let .redirect(base):
            sendAll(c, Array("HTTP/1.1 307 Temporary Redirect\r\nLocation: \(base)\(request.path)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            return
        case .drop:
            return
        case let .shortRange(bytes):
            if let r = request.range, let start = FaultProxy.rangeStart(r) {
                lines = lines.map { $0.lowercased().hasPrefix("range:") ? "Range: bytes=\(start)-\(start + UInt64(bytes) - 1)" : $0 }
            }
        case .ignoreRange:
            lines = lines.filter { !$0.lowercased().hasPrefix("range:") }
        default: break
        }
        // Forward with "Connection: close", read the whole response.
        var forward = first + "\r\n"
        for l in lines.dropFirst() where !l.lowercased().hasPrefix("connection:") { forward += l + "\r\n" }
        for h in extraHeaders { forward += h + "\r\n" }
        forward += "Connection: close\r\n\r\n"
        guard var response = exchange(Array(forward.utf8), host: upstream.host, port: upstream.port) else { return }
        guard var split = FaultProxy.headEnd(response) else { return }
        let rewrites = headRewrites.withLock { $0 }
        if !rewrites.isEmpty {
            var head = String(decoding: response[0..<split], as: UTF8.self)
            for (a, b) in rewrites { head = head.replacingOccurrences(of: a, with: b) }
            response = Array(head.utf8) + response[split...]
            split = head.utf8.count
        }
        let body = response.count - split
        stats.withLock { $0.bodyBytes += body }
        switch fault {
        case let .reset(after):
            sendAll(c, Array(response[0..<min(response.count, split + after)]))
            var l = linger(l_onoff: 1, l_linger: 0)
            setsockopt(c, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        case let .truncate(after):
            sendAll(c, Array(response[0..<min(response.count, split + after)]))
        case let .die(after):
            sendAll(c, Array(response[0..<min(response.count, split + after)]))
            kill()
        case .corrupt:
            var bad = response
            if bad.count > split { bad[split] ^= 0x01 }
            sendAll(c, bad)
        default:
            sendAll(c, response)
        }
    }

    static func headEnd(_ r: [UInt8]) -> Int? {
        guard r.count >= 4 else { return nil }
        for i in 0...(r.count - 4) where r[i] == 13 && r[i + 1] == 10 && r[i + 2] == 13 && r[i + 3] == 10 { return i + 4 }
        return nil
    }

    /// `<prefix>/http://host:port/path` -> where to connect and what path to ask for.
    static func forwardTarget(_ path: String, prefix: String) -> (host: String, port: UInt16, authority: String, path: String)? {
        guard path.hasPrefix(prefix + "/") else { return nil }
        var url = Substring(path.dropFirst(prefix.count + 1))
        guard url.hasPrefix("http://") else { return nil }
        url = url.dropFirst(7)
        let slash = url.firstIndex(of: "/") ?? url.endIndex
        let authority = String(url[..<slash])
        let rest = url[slash...].isEmpty ? "/" : String(url[slash...])
        let hp = authority.split(separator: ":")
        guard let h = hp.first else { return nil }
        let host = h == "localhost" ? "127.0.0.1" : String(h)
        let port = hp.count > 1 ? UInt16(hp[1]) ?? 80 : 80
        return (host, port, authority, rest)
    }

    /// The first byte of `bytes=a-b`.
    static func rangeStart(_ range: String) -> UInt64? {
        guard range.hasPrefix("bytes="), let dash = range.firstIndex(of: "-") else { return nil }
        return UInt64(range[range.index(range.startIndex, offsetBy: 6)..<dash])
    }

    private func exchange(_ request: [UInt8], host: String, port: UInt16) -> [UInt8]? {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host)
        addr.sin_port = port.bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { return nil }
        sendAll(s, request)
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = recv(s, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    private func sendAll(_ s: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(s, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }
}
