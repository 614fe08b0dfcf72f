import Glibc
import Threading

/// A P2P proxy in front of registries (Dragonfly's dfdaemon, dadi-p2proxy), as overlaybd's
/// `p2pConfig.address`: a blob range read for `<URL>` is sent to `<address>/<URL>`, and
/// the proxy fetches it from its peers or from the registry.
public struct P2PProxy: Sendable, Equatable, CustomStringConvertible {
    /// The prefix, without a trailing `/` (e.g. `http://localhost:9731/accelerator`).
    public let address: String
    public let host: String
    public let port: UInt16

    /// An address that is not `[http://|https://]host[:port][/path]`.
    public struct AddressError: Error, CustomStringConvertible {
        public let address: String
        public let detail: String
        public var description: String { "P2P proxy address '\(address)': \(detail)" }
    }

    /// Parses `address`; without a scheme, `http://` is assumed (overlaybd's README writes
    /// `localhost:19145/dadip2p`).
    public init(address: String) throws(AddressError) {
        var rest = Substring(address)
        var scheme = "http://"
        for s in ["http://", "https://"] where rest.hasPrefix(s) {
            scheme = s
            rest = rest.dropFirst(s.count)
        }
        if rest.contains("://") { throw AddressError(address: address, detail: "only http:// and https:// are supported") }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = rest[slash...]
        while path.hasSuffix("/") { path = path.dropLast() }
        var hostPart = authority
        var portPart: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw AddressError(address: address, detail: "unclosed '[' in the host") }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portPart = after.dropFirst() } else if !after.isEmpty {
                throw AddressError(address: address, detail: "unexpected text after the host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        }
        guard !hostPart.isEmpty, !hostPart.contains("@"), !hostPart.contains("?") else {
            throw AddressError(address: address, detail: "no host")
        }
        if let portPart {
            guard let p = UInt16(portPart), p > 0 else { throw AddressError(address: address, detail: "'\(portPart)' is not a TCP port") }
            port = p
        } else {
            port = scheme == "https://" ? 443 : 80
        }
        host = String(hostPart)
        self.address = scheme + authority + path
    }

    public var description: String { address }

    /// The URL the proxy is asked for `target` (a full `http(s)://` URL).
    public func url(for target: String) -> String { address + "/" + target }

    /// Whether a TCP connection to the proxy opens within `timeoutMilliseconds` (overlaybd's
    /// check at device creation).
    public func answers(timeoutMilliseconds: Int32 = 1000) -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(first) }
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            if fd < 0 { continue }
            defer { close(fd) }
            if connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return true }
            guard errno == EINPROGRESS else { continue }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard retryingInterrupted({ poll(&p, 1, timeoutMilliseconds) }) == 1 else { continue }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 { return true }
        }
        return false
    }
}
