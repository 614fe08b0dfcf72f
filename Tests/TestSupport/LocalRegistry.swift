import Crypto
import Glibc

/// Debian's `docker-registry` (distribution v2) on 127.0.0.1 with a config file of its
/// own in a temporary folder (never the package's default config); stopped by PID.
public final class LocalRegistry {
    public enum Auth { case none, htpasswd(user: String, password: String), token(TokenServer) }

    public let dir = TemporaryDirectory("obd-registry")
    public let port: UInt16
    public let pid: pid_t
    public var host: String { "127.0.0.1:\(port)" }
    /// The CA that signed the TLS certificate (with `tls`).
    public var caFile: String { dir.file("ca.pem") }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    public static var available: Bool { access("/usr/bin/docker-registry", X_OK) == 0 && access("/usr/bin/skopeo", X_OK) == 0 }

    /// With `tls`, the registry serves HTTPS with a certificate for 127.0.0.1 signed by a
    /// throwaway CA (`caFile`).
    public init(auth: Auth = .none, tls: Bool = false) throws {
        var config = """
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(dir.path)/data
            http:
              addr: 127.0.0.1:@PORT@
              secret: obd-test-secret

            """
        if tls {
            let d = dir.path
            for argv in [
                ["/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(d)/ca.key",
                 "-subj", "/CN=obd registry test CA", "-days", "2", "-out", "\(d)/ca.pem"],
                ["/usr/bin/openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(d)/server.key",
                 "-subj", "/CN=127.0.0.1", "-out", "\(d)/server.csr"],
                ["/bin/sh", "-c", "printf 'subjectAltName=IP:127.0.0.1\\n' > \(d)/san.ext"],
                ["/usr/bin/openssl", "x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.pem", "-CAkey", "\(d)/ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "\(d)/san.ext", "-out", "\(d)/server.pem"],
            ] {
                let r = run(argv)
                guard r.status == 0 else { throw Failure(description: "\(argv[1]) failed: \(r.err)") }
            }
            config += """
                  tls:
                    certificate: \(d)/server.pem
                    key: \(d)/server.key

                """
        }
        if case let .htpasswd(user, password) = auth {
            let r = run(["/usr/bin/htpasswd", "-Bbn", user, password])
            guard r.status == 0 else { throw Failure(description: "htpasswd failed: \(r.err)") }
            try LocalRegistry.write(dir.file("htpasswd"), r.out)
            config += """
                auth:
                  htpasswd:
                    realm: obd-test
                    path: \(dir.file("htpasswd"))

                """
        }
        if case let .token(server) = auth {
            config += """
                auth:
                  token:
                    realm: \(server.realm)
                    service: \(server.service)
                    issuer: \(server.issuer)
                    rootcertbundle: \(server.caBundle)

                """
        }
        // A free port can be taken by a parallel test before the registry binds it: then
        // the registry exits at once, and it is started again on another port.
        for _ in 0..<5 {
            let candidate = LocalRegistry.freePort()
            try LocalRegistry.write(dir.file("config.yml"), config.replacingOccurrences(of: "@PORT@", with: "\(candidate)"))
            guard let p = spawn(["/usr/bin/docker-registry", "serve", dir.file("config.yml")],
                                stdout: dir.file("registry.log"), stderr: dir.file("registry.log")) else {
                throw Failure(description: "cannot start docker-registry")
            }
            var status: Int32 = 0
            for _ in 0..<200 {
                if waitpid(p, &status, WNOHANG) == p { break }
                if LocalRegistry.canConnect(candidate) {
                    usleep(50_000)
                    if waitpid(p, &status, WNOHANG) == 0 {
                        port = candidate
                        pid = p
                        return
                    }
                    break
                }
                usleep(25_000)
            }
            kill(p, SIGKILL)
            waitpid(p, &status, 0)
            guard readText(dir.file("registry.log")).contains("address already in use") else { break }
        }
        throw Failure(description: "docker-registry did not start: \(readText(dir.file("registry.log")))")
    }

    deinit {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        dir.remove()
    }

    public static func write(_ path: String, _ text: String) throws {
        guard let f = fopen(path, "w") else { throw Failure(description: "cannot write \(path)") }
        fputs(text, f)
        fclose(f)
    }

    static func freePort() -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    static func canConnect(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    /// Pushes an image with one layer (`layer` bytes) using skopeo from an OCI layout.
    /// Returns the layer digest.
    @discardableResult
    public func push(repository: String, tag: String, layer: [UInt8], credentials: String? = nil) throws -> String {
        try push(repository: repository, tag: tag, layers: [layer], credentials: credentials)[0]
    }

    /// Pushes an image with these layers (bottom to top) using skopeo from an OCI layout.
    /// Returns the layer digests.
    @discardableResult
    public func push(repository: String, tag: String, layers: [[UInt8]], credentials: String? = nil) throws -> [String] {
        let oci = TemporaryDirectory("obd-oci")
        defer { oci.remove() }
        _ = run(["/bin/mkdir", "-p", oci.path + "/blobs/sha256"])
        func blob(_ bytes: [UInt8]) throws -> String {
            let hex = Digest.sha256(bytes)
            let f = fopen(oci.path + "/blobs/sha256/" + hex, "w")
            _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
            fclose(f)
            return hex
        }
        let hexes = try layers.map { try blob($0) }
        let diffIDs = hexes.map { "\"sha256:\($0)\"" }.joined(separator: ",")
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[\#(diffIDs)]}}"#.utf8)
        let configHex = try blob(config)
        let layerList = zip(hexes, layers).map { #"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:\#($0.0)","size":\#($0.1.count)}"# }.joined(separator: ",")
        let manifest = Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\(configHex)","size":\(config.count)},\
            "layers":[\(layerList)]}
            """.utf8)
        let manifestHex = try blob(manifest)
        try LocalRegistry.write(oci.path + "/oci-layout", #"{"imageLayoutVersion":"1.0.0"}"#)
        try LocalRegistry.write(oci.path + "/index.json", """
            {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "digest":"sha256:\(manifestHex)","size":\(manifest.count),"annotations":{"org.opencontainers.image.ref.name":"\(tag)"}}]}
            """)
        var argv = ["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"]
        if let credentials { argv += ["--dest-creds", credentials] }
        argv += ["oci:\(oci.path):\(tag)", "docker://\(host)/\(repository):\(tag)"]
        let r = run(argv)
        guard r.status == 0 else { throw Failure(description: "skopeo copy failed: \(r.err)") }
        return hexes.map { "sha256:" + $0 }
    }
}
