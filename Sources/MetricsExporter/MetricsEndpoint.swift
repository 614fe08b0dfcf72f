import BlockIO
import CoreMetrics
import Glibc
import Prometheus
import Synchronization
import Threading

/// The Prometheus endpoint of `exporterConfig`: bootstraps swift-metrics with a
/// Prometheus registry, then answers `GET <uriPrefix>` on a TCP port with the text
/// exposition format, rendered at each scrape. Anything else gets 404.
public final class MetricsEndpoint: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let port: UInt16
    public let uriPrefix: String
    private let fd: Int32
    private let stopped = Atomic<Bool>(false)

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Bootstraps the metrics system (once per process) and listens on `address:port`
    /// (port 0 picks a free one).
    public init(address: String = "0.0.0.0", port: Int, uriPrefix: String) throws {
        registry = MetricsEndpoint.bootstrapOnce()
        self.uriPrefix = uriPrefix.hasPrefix("/") ? uriPrefix : "/" + uriPrefix
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        guard inet_pton(AF_INET, address, &addr.sin_addr) == 1 else {
            close(s)
            throw Failure(description: "exporterConfig: '\(address)' is not an IPv4 address")
        }
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(s, 16) == 0 else {
            let e = errno
            close(s)
            throw Failure(description: "exporterConfig: cannot listen on \(address):\(port): \(BlockIOError.text(e))")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        self.port = UInt16(bigEndian: addr.sin_port)
        fd = s
        try NamedThread.detach(name: "obd-metrics") { [self] in serve() }
    }

    deinit { stop() }

    public func stop() {
        if stopped.exchange(true, ordering: .relaxed) { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private static let shared = Mutex<PrometheusCollectorRegistry?>(nil)

    /// Installs the Prometheus backend for swift-metrics; later calls reuse it.
    @discardableResult
    public static func bootstrapOnce() -> PrometheusCollectorRegistry {
        shared.withLock { r in
            if let r { return r }
            let made = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: made))
            r = made
            return made
        }
    }

    private func serve() {
        while !stopped.load(ordering: .relaxed) {
            let c = accept(fd, nil, nil)
            if c < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            answer(c)
            close(c)
        }
    }

    private func answer(_ c: Int32) {
        var head = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) && head.count < 16384 {
            let n = recv(c, &buf, buf.count, 0)
            if n <= 0 { return }
            head += buf[0..<n]
        }
        let line = String(decoding: head.prefix { $0 != 13 }, as: UTF8.self).split(separator: " ")
        var response: [UInt8]
        if line.count >= 2, line[0] == "GET", line[1].split(separator: "?").first.map(String.init) == uriPrefix {
            var body: [UInt8] = []
            registry.emit(into: &body)
            response = Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
            response += body
        } else {
            response = Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        }
        var off = 0
        while off < response.count {
            let n = response[off...].withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }
}
