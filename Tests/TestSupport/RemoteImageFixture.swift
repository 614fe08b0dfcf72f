import BlockIO
import Glibc

/// A two-layer obd image (overlaybd's reference layers 1 and 2, ZFile-compressed, the
/// first tar-wrapped) pushed to a `docker-registry` on loopback, with the files obd
/// needs to serve it lazily: `config.v1.json` (remote lowers only), `overlaybd.json`
/// (a private cache dir) and `cred.json`. Optionally a fault proxy sits in front.
public final class RemoteImageFixture {
    public let registry: LocalRegistry
    public let token: TokenServer?
    public let proxy: FaultProxy?
    public let dir = TemporaryDirectory("obd-remote")
    public let digests: [String]
    public let layers: [[UInt8]]
    public let repository = "obd/ref"

    /// SHA-256 of the whole 1 GiB disk and of its first 4 MiB (reference layers 1+2).
    public static let expected = (full: "af3aaf93cf13d1483f27b95e7f0fd9300e24903e77cd5d7ee72842906e418121",
                                  first4MiB: "c60370da6c2ad94a093e3b0727ccfa944579e62295b340b9e036cda6e3915cef")

    public static var available: Bool { (LocalRegistry.available || ReferenceFiles.isCI) && ReferenceFiles.shouldRun }

    public enum Mode: String, Sendable, CaseIterable { case anonymous, basic, token }

    public static let user = "obd-user", password = "s3cret-Pa55word-obd"

    public let tls: Bool

    public init(mode: Mode = .anonymous, withProxy: Bool = false, tls: Bool = false) throws {
        self.tls = tls
        switch mode {
        case .anonymous:
            token = nil
            registry = try LocalRegistry(tls: tls)
        case .basic:
            token = nil
            registry = try LocalRegistry(auth: .htpasswd(user: Self.user, password: Self.password))
        case .token:
            let t = try TokenServer(user: Self.user, password: Self.password)
            token = t
            registry = try LocalRegistry(auth: .token(t))
        }
        var blobs: [[UInt8]] = []
        for p in ["lsmt/l1/layer1.commit.lz4.zfile.tar", "lsmt/l2/layer2.commit.lz4.zfile"] {
            let f = try LocalFile(path: ReferenceFiles.path(p))
            blobs.append(try f.readBytes(at: 0, count: Int(f.size)))
        }
        layers = blobs
        digests = try registry.push(repository: repository, tag: "v1", layers: blobs,
                                    credentials: mode == .anonymous ? nil : "\(Self.user):\(Self.password)")
        proxy = withProxy ? try FaultProxy(upstreamPort: registry.port) : nil
        try writeCredentials(password: Self.password)
        try writeGlobal()
        try writeImage()
    }

    /// Where obd reaches the registry (through the proxy if there is one).
    public var host: String { proxy?.host ?? registry.host }
    public var configPath: String { dir.file("config.v1.json") }
    public var globalPath: String { dir.file("overlaybd.json") }
    public var cacheDir: String { dir.file("cache") }
    public var resultPath: String { dir.file("result") }
    public func layerDir(_ i: Int) -> String { dir.file("layers/\(i)") }

    public func writeCredentials(password: String) throws {
        try LocalRegistry.write(dir.file("cred.json"), """
            {"auths": {"\(host)/obd": {"username": "\(Self.user)", "password": "\(password)"}}}
            """)
    }

    /// Writes overlaybd.json; `extra` adds top-level keys (JSON members without braces).
    public func writeGlobal(refillSize: Int = 262_144, timeoutSeconds: Int = 10, cacheDir: String? = nil, extra: String = "",
                            caFile: String? = nil, insecureHosts: [String] = []) throws {
        let ca = caFile.map { #", "caFile": "\#($0)""# } ?? ""
        let insecure = insecureHosts.isEmpty ? "" : #", "insecureHosts": [\#(insecureHosts.map { "\"\($0)\"" }.joined(separator: ","))]"#
        try LocalRegistry.write(globalPath, """
            {"cacheConfig": {"cacheType": "file", "cacheDir": "\(cacheDir ?? self.cacheDir)", "cacheSizeGB": 1, "refillSize": \(refillSize)},
             "credentialConfig": {"mode": "file", "path": "\(dir.file("cred.json"))"},
             "registryConfig": {"timeoutSeconds": \(timeoutSeconds)\(ca)\(insecure)}\(extra.isEmpty ? "" : ",\n" + extra)}
            """)
    }

    /// Writes config.v1.json; `download` is the image's `download` object (JSON) if any.
    public func writeImage(download: String? = nil, withDirs: Bool = false) throws {
        let lowers = zip(digests, layers).enumerated().map { i, d in
            #"{"digest": "\#(d.0)", "size": \#(d.1.count)\#(withDirs ? #", "dir": "\#(layerDir(i))""# : "")}"#
        }.joined(separator: ", ")
        try LocalRegistry.write(configPath, """
            {"repoBlobUrl": "\(tls ? "https" : "http")://\(host)/v2/\(repository)/blobs", "lowers": [\(lowers)],
             "resultFile": "\(resultPath)"\(download.map { #", "download": \#($0)"# } ?? "")}
            """)
    }
}
