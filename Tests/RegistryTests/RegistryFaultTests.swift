import BlockIO
import Glibc
import Registry
import Synchronization
import TestSupport
import Testing
import Threading

/// The gaps of the lazy-layer work, each against docker-registry behind the fault proxy:
/// one deadline per operation, blob sizes without HEAD, backoff on failing redirect
/// targets, cut bodies continued, token fetches retried.
@Suite("Registry faults: deadlines, sizes, redirects, tokens", .serialized, .enabled(if: LocalRegistry.available || ReferenceFiles.isCI))
struct RegistryFaultTests {
    static func pushed(_ reg: LocalRegistry, repository: String, size: Int = 300_000, credentials: String? = nil) throws -> (bytes: [UInt8], digest: String) {
        var g = SplitMix64(seed: 41)
        let bytes = g.bytes(size)
        return (bytes, try reg.push(repository: repository, tag: "v1", layer: bytes, credentials: credentials))
    }

    static func client(_ host: String, timeout: Int = 10, credentials: CredentialStore = CredentialStore()) -> RegistryClient {
        var o = RegistryOptions(plainHTTP: true, credentials: credentials)
        o.timeoutSeconds = timeout
        return RegistryClient(host: host, options: o)
    }

    @Test("blob size from GET with Range: bytes=0-0 when HEAD is refused (by the redirect target or the registry)")
    func sizeWithoutHead() throws {
        let reg = try LocalRegistry()
        let (bytes, digest) = try Self.pushed(reg, repository: "obd/size")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        // Object storage with a pre-signed URL that signs GET only: HEAD is 403.
        let storage = try FaultProxy(upstreamPort: reg.port, bindAddress: "127.0.0.2")
        storage.setPolicy { r, _ in r.method == "HEAD" ? .status(403) : .pass }
        proxy.setPolicy { r, _ in r.path.contains("/blobs/") ? .redirect(base: storage.base) : .pass }
        let client = Self.client(proxy.host)
        #expect(try client.blobSize(repository: "obd/size", digest: digest) == UInt64(bytes.count))
        let blob = try RemoteBlob(client: client, repository: "obd/size", digest: digest)
        #expect(blob.size == UInt64(bytes.count))
        #expect(try blob.readBytes(at: 1234, count: 5000)[...] == bytes[1234..<6234])
        // A registry that refuses HEAD itself.
        proxy.setPolicy { r, _ in r.method == "HEAD" ? .status(405) : .pass }
        let other = Self.client(proxy.host)
        #expect(try other.blobSize(repository: "obd/size", digest: digest) == UInt64(bytes.count))
        // A missing blob is still "not found", not a size.
        #expect(throws: RegistryError.notFound(url: other.blobURL(repository: "obd/size", digest: "sha256:" + String(repeating: "0", count: 64)))) {
            try other.blobSize(repository: "obd/size", digest: "sha256:" + String(repeating: "0", count: 64))
        }
    }

    @Test("a redirect target that keeps refusing is asked again with backoff, not in a tight loop")
    func redirectTargetBackoff() throws {
        let reg = try LocalRegistry()
        let (_, digest) = try Self.pushed(reg, repository: "obd/stale")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        let storage = try FaultProxy(upstreamPort: reg.port, bindAddress: "127.0.0.2")
        storage.setPolicy { _, _ in .status(403) }
        proxy.setPolicy { r, _ in r.isBlobRead ? .redirect(base: storage.base) : .pass }
        let blob = try RemoteBlob(client: Self.client(proxy.host, timeout: 2), repository: "obd/stale", digest: digest, size: 300_000)
        #expect(throws: RegistryError.self) { try blob.readBytes(at: 0, count: 4096) }
        // Without backoff the 64 attempts end in ~32 storage requests within milliseconds;
        // with it, the 2 s deadline allows a handful.
        #expect(storage.requests >= 2 && storage.requests <= 12, "\(storage.requests) requests to a failing redirect target")
    }

    @Test("one deadline for a whole read: continuations of short answers do not each get a new one")
    func oneDeadlineWithContinuations() throws {
        let reg = try LocalRegistry()
        let (_, digest) = try Self.pushed(reg, repository: "obd/short")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        // Each answer is a valid 206 of 1000 bytes, 150 ms late: 64 KiB needs 66 of them.
        proxy.latencyMs.store(150, ordering: .relaxed)
        proxy.setPolicy { r, _ in r.isBlobRead ? .shortRange(bytes: 1000) : .pass }
        let blob = try RemoteBlob(client: Self.client(proxy.host, timeout: 1), repository: "obd/short", digest: digest, size: 300_000)
        do {
            _ = try blob.readBytes(at: 0, count: 65536)
            Issue.record("a read that needed \(proxy.blobReads) requests outlived its 1 s deadline")
        } catch let e as RegistryError {
            #expect(e == .timeout(url: blob.name), "\(e)")
        }
        #expect(proxy.blobReads < 20, "\(proxy.blobReads) requests under one 1 s deadline")
    }

    /// The Range headers of blob reads, as they arrive.
    final class RangeLog: Sendable {
        private let ranges = Mutex<[String]>([])
        func add(_ r: String) { ranges.withLock { $0.append(r) } }
        var all: [String] { ranges.withLock { $0 } }
    }

    /// Cuts the first blob read after 20,000 body bytes and the second with `second`.
    static func cutTwice(_ proxy: FaultProxy, second: FaultProxy.Fault) -> RangeLog {
        let log = RangeLog()
        proxy.setPolicy { r, n in
            guard r.isBlobRead else { return .pass }
            log.add(r.range ?? "")
            switch n {
            case 0: return .truncate(afterBytes: 20_000)
            case 1: return second
            default: return .pass
            }
        }
        return log
    }

    @Test("a cut body continues from where it stopped, bytes exact")
    func cutBodyContinues() throws {
        let reg = try LocalRegistry()
        let (bytes, digest) = try Self.pushed(reg, repository: "obd/cut")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        let ranges = Self.cutTwice(proxy, second: .truncate(afterBytes: 7_000))
        let blob = try RemoteBlob(client: Self.client(proxy.host), repository: "obd/cut", digest: digest, size: UInt64(bytes.count))
        #expect(try blob.readBytes(at: 1000, count: 100_000)[...] == bytes[1000..<101_000])
        let seen = ranges.all
        #expect(seen.count == 3, "\(seen)")
        // Each continuation starts right after the bytes that arrived.
        #expect(seen == ["bytes=1000-100999", "bytes=21000-100999", "bytes=28000-100999"], "\(seen)")
    }

    @Test("a token server that fails at first is retried under the read's deadline")
    func tokenFetchRetried() throws {
        let tokens = try TokenServer(user: "obd", password: "t0ken-pass")
        defer { tokens.stop() }
        let reg = try LocalRegistry(auth: .token(tokens))
        let (bytes, digest) = try Self.pushed(reg, repository: "obd/tok", credentials: "obd:t0ken-pass")
        let tokenProxy = try FaultProxy(upstreamPort: tokens.port)
        tokenProxy.setPolicy { _, n in
            switch n {
            case 0: return .drop
            case 1: return .status(503)
            default: return .pass
            }
        }
        let proxy = try FaultProxy(upstreamPort: reg.port)
        proxy.rewriteResponses(replacing: tokens.realm, with: tokenProxy.base + "/token")
        let creds = CredentialStore(entries: [(proxy.host, Credential(username: "obd", password: "t0ken-pass"))])
        let blob = try RemoteBlob(client: Self.client(proxy.host, credentials: creds), repository: "obd/tok", digest: digest, size: UInt64(bytes.count))
        #expect(try blob.readBytes(at: 500, count: 30_000)[...] == bytes[500..<30_500])
        #expect(tokenProxy.requests >= 3, "the token server was asked \(tokenProxy.requests) times")
        // A token server that never answers: the read ends at its deadline, as a timeout.
        let down = try FaultProxy(upstreamPort: tokens.port)
        down.setPolicy { _, _ in .drop }
        let proxy2 = try FaultProxy(upstreamPort: reg.port)
        proxy2.rewriteResponses(replacing: tokens.realm, with: down.base + "/token")
        let creds2 = CredentialStore(entries: [(proxy2.host, Credential(username: "obd", password: "t0ken-pass"))])
        let blob2 = try RemoteBlob(client: Self.client(proxy2.host, timeout: 1, credentials: creds2), repository: "obd/tok", digest: digest, size: UInt64(bytes.count))
        #expect(throws: RegistryError.timeout(url: blob2.name)) { try blob2.readBytes(at: 0, count: 1000) }
        #expect(down.requests >= 2)
    }

    @Test("P2P address parsing")
    func p2pAddress() throws {
        let a = try P2PProxy(address: "http://localhost:9731/accelerator/")
        #expect(a.host == "localhost" && a.port == 9731 && a.address == "http://localhost:9731/accelerator")
        #expect(a.url(for: "https://r.example/v2/x/blobs/sha256:1") == "http://localhost:9731/accelerator/https://r.example/v2/x/blobs/sha256:1")
        let b = try P2PProxy(address: "localhost:19145/dadip2p")
        #expect(b.address == "http://localhost:19145/dadip2p" && b.port == 19145)
        #expect(try P2PProxy(address: "http://[::1]:8080").host == "::1")
        for bad in ["", "http://", "ftp://x:1", "http://host:0/a", "http://host:99999", "http://:80/x"] {
            #expect(throws: P2PProxy.AddressError.self) { try P2PProxy(address: bad) }
        }
    }
}
