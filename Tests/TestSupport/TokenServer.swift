import Crypto
import FoundationEssentials
import Glibc
import Threading

/// A Docker token server for tests (the registry's `auth: token` mode): a throwaway CA
/// made with openssl signs a leaf certificate; tokens are ES256 JWTs carrying the leaf in
/// `x5c`, granting pull and push to callers with the right Basic credentials.
public final class TokenServer: @unchecked Sendable {
    public let dir = TemporaryDirectory("obd-token")
    public let port: UInt16
    public let service = "obd-registry"
    public let issuer = "obd-test-issuer"
    public let user: String
    public let password: String
    private let key: P256.Signing.PrivateKey
    private let fd: Int32
    /// Tokens issued so far.
    public private(set) var issued = 0

    public var realm: String { "http://127.0.0.1:\(port)/token" }
    public var caBundle: String { dir.file("ca.pem") }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    public init(user: String, password: String, port wanted: UInt16 = 0) throws {
        self.user = user
        self.password = password
        let d = dir.path
        for argv in [
            ["/usr/bin/openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "\(d)/ca.key"],
            ["/usr/bin/openssl", "req", "-x509", "-new", "-key", "\(d)/ca.key", "-subj", "/CN=obd test CA", "-days", "2", "-out", "\(d)/ca.pem"],
            ["/usr/bin/openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "\(d)/leaf.key"],
            ["/usr/bin/openssl", "req", "-new", "-key", "\(d)/leaf.key", "-subj", "/CN=obd token signer", "-out", "\(d)/leaf.csr"],
            ["/usr/bin/openssl", "x509", "-req", "-in", "\(d)/leaf.csr", "-CA", "\(d)/ca.pem", "-CAkey", "\(d)/ca.key",
             "-CAcreateserial", "-days", "2", "-out", "\(d)/leaf.pem"],
            ["/usr/bin/openssl", "x509", "-in", "\(d)/leaf.pem", "-outform", "DER", "-out", "\(d)/leaf.der"],
        ] {
            let r = run(argv)
            guard r.status == 0 else { throw Failure(description: "\(argv[1]) failed: \(r.err)") }
        }
        key = try P256.Signing.PrivateKey(pemRepresentation: readText("\(d)/leaf.key"))
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = wanted.bigEndian
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sock, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        listen(sock, 16)
        fd = sock
        leafDERBytes = TokenServer.readBinary("\(d)/leaf.der")
        try NamedThread.detach(name: "token-server") { [self] in serve() }
    }

    private var leafDERBytes: [UInt8] = []

    static func readBinary(_ path: String) -> [UInt8] {
        guard let f = fopen(path, "rb") else { return [] }
        defer { fclose(f) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    /// Stops accepting (the listening socket closes).
    public func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { return }
            handle(c)
            close(c)
        }
    }

    private func handle(_ c: Int32) {
        var req = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 8192)
        while !req.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) && req.count < 65536 {
            let n = recv(c, &buf, buf.count, 0)
            if n <= 0 { return }
            req += buf[0..<n]
        }
        let text = String(decoding: req, as: UTF8.self)
        let lines = text.split(separator: "\r\n")
        guard let first = lines.first else { return }
        let target = first.split(separator: " ").dropFirst().first.map(String.init) ?? ""
        var query: [String: String] = [:]
        if let q = target.firstIndex(of: "?") {
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { query[String(kv[0])] = TokenServer.percentDecode(String(kv[1])) }
            }
        }
        let expected = "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
        let authorized = lines.contains { $0.lowercased().hasPrefix("authorization:") && $0.dropFirst(14).trimmingCharacters() == expected }
        guard authorized else {
            send(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        }
        var access: [[String: Any]] = []
        for scope in (query["scope"] ?? "").split(separator: " ") {
            let parts = scope.split(separator: ":")
            if parts.count == 3 {
                access.append(["type": String(parts[0]), "name": String(parts[1]), "actions": parts[2].split(separator: ",").map(String.init)])
            }
        }
        let token = makeToken(audience: query["service"] ?? service, access: access)
        issued += 1
        let body = "{\"token\":\"\(token)\",\"access_token\":\"\(token)\",\"expires_in\":300}"
        send(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body)
    }

    private func send(_ c: Int32, _ s: String) {
        _ = s.withCString { Glibc.send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    }

    private func makeToken(audience: String, access: [[String: Any]]) -> String {
        let now = Int(time(nil))
        let x5c = Data(leafDERBytes).base64EncodedString()
        let header = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"x5c\":[\"\(x5c)\"]}"
        var accessJSON = "["
        for (i, a) in access.enumerated() {
            let actions = (a["actions"] as? [String] ?? []).map { "\"\($0)\"" }.joined(separator: ",")
            accessJSON += (i > 0 ? "," : "") + "{\"type\":\"\(a["type"]!)\",\"name\":\"\(a["name"]!)\",\"actions\":[\(actions)]}"
        }
        accessJSON += "]"
        let claims = "{\"iss\":\"\(issuer)\",\"sub\":\"\(user)\",\"aud\":\"\(audience)\",\"exp\":\(now + 300),\"nbf\":\(now - 10),\"iat\":\(now),\"jti\":\"\(UInt64.random(in: 0...UInt64.max))\",\"access\":\(accessJSON)}"
        let signingInput = TokenServer.base64url(Array(header.utf8)) + "." + TokenServer.base64url(Array(claims.utf8))
        let signature = try! key.signature(for: Array(signingInput.utf8))
        return signingInput + "." + TokenServer.base64url(Array(signature.rawRepresentation))
    }

    static func base64url(_ b: [UInt8]) -> String {
        Data(b).base64EncodedString().replacingCharacters()
    }

    static func percentDecode(_ s: String) -> String {
        var out = [UInt8]()
        var bytes = Array(s.utf8)[...]
        while let b = bytes.first {
            bytes = bytes.dropFirst()
            if b == UInt8(ascii: "%"), bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else if b == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    /// base64 -> base64url without padding.
    func replacingCharacters() -> String {
        String(self.compactMap { c -> Character? in
            switch c {
            case "+": return "-"
            case "/": return "_"
            case "=": return nil
            default: return c
            }
        })
    }
}

extension StringProtocol {
    /// Without leading and trailing whitespace.
    public func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
