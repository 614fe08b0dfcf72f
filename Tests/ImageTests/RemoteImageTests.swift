import BlockIO
import FoundationEssentials
import Glibc
import Image
import Registry
import Synchronization
import TestSupport
import Testing
import Threading

/// Images whose lowers are all remote, served from docker-registry on loopback.
@Suite("Remote lowers against docker-registry", .serialized, .enabled(if: RemoteImageFixture.available))
struct RemoteImageTests {
    static func digest(_ image: Image) throws -> (full: String, first: String) {
        let disk = image.stack
        let first = try Digest.sha256(size: 4 << 20) { try disk.read(into: $0, at: $1) }
        let full = try Digest.sha256(size: disk.size) { try disk.read(into: $0, at: $1) }
        return (full, first)
    }

    static func open(_ f: RemoteImageFixture, log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Image {
        try Image.open(configPath: f.configPath, global: GlobalConfig.load(from: f.globalPath), log: log)
    }

    @Test("every auth mode: the remote image reads the same bytes as the local layers", arguments: RemoteImageFixture.Mode.allCases)
    func readsBack(mode: RemoteImageFixture.Mode) throws {
        let f = try RemoteImageFixture(mode: mode)
        let image = try Self.open(f)
        #expect(image.hasRemoteLowers && image.remoteLayers.count == 2)
        let d = try Self.digest(image)
        #expect(d.first == RemoteImageFixture.expected.first4MiB)
        #expect(d.full == RemoteImageFixture.expected.full)
        try Image.writeResult(config: image.config, error: nil)
        #expect(readText(f.resultPath) == "success")
    }

    @Test("wrong credentials: 'Authentication failed' in the result file, never the secret", arguments: [RemoteImageFixture.Mode.basic, .token])
    func wrongCredentials(mode: RemoteImageFixture.Mode) throws {
        let f = try RemoteImageFixture(mode: mode)
        let wrong = "wrong-Secret-987"
        try f.writeCredentials(password: wrong)
        var failure: (any Error)?
        do { _ = try Self.open(f) } catch { failure = error }
        let e = try #require(failure)
        try Image.writeResult(config: ImageConfig.load(path: f.configPath), error: e)
        let text = readText(f.resultPath)
        #expect(text.hasPrefix("failed:") && text.contains("Authentication failed"), "\(text)")
        #expect(!text.contains(wrong) && !text.contains(RemoteImageFixture.password))
        // No credentials at all: the same clean failure.
        try LocalRegistry.write(f.dir.file("cred.json"), #"{"auths": {}}"#)
        #expect(throws: ImageError.self) { try Self.open(f) }
    }

    @Test("faults on the way (delays, resets, cut bodies, 500/503/429) never give wrong bytes")
    func faults() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        try f.writeGlobal(refillSize: 4096)
        let proxy = try #require(f.proxy)
        proxy.setPolicy { request, n in
            guard request.isBlobRead else { return .pass }
            switch n % 7 {
            case 1: return .delay(milliseconds: 30)
            case 2: return .reset(afterBytes: 1000)
            case 3: return .truncate(afterBytes: 2000)
            case 4: return .status(500)
            case 5: return .status(503)
            case 6: return .status(429)
            default: return .pass
            }
        }
        let image = try Self.open(f)
        let d = try Self.digest(image)
        #expect(d.full == RemoteImageFixture.expected.full)
        #expect(proxy.blobReads >= 21, "every fault was exercised (\(proxy.blobReads) blob reads)")
    }

    @Test("a registry gone longer than the deadline gives a clean I/O error; a short outage is survived")
    func outage() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        try f.writeGlobal(refillSize: 4096, timeoutSeconds: 2)
        let proxy = try #require(f.proxy)
        let image = try Self.open(f)
        proxy.setPolicy { _, _ in .status(503) }
        let start = monotonicSeconds()
        #expect(throws: (any Error).self) { _ = try Self.digest(image) }
        let took = monotonicSeconds() - start
        #expect(took >= 1.5 && took < 6, "gave up after \(took) s with a 2 s deadline")
        // A one-second outage is bridged by the retries.
        let until = monotonicSeconds() + 1
        proxy.setPolicy { _, _ in monotonicSeconds() < until ? .status(503) : .pass }
        let d = try Self.digest(image)
        #expect(d.full == RemoteImageFixture.expected.full)
    }

    @Test("redirects to a second host carry no Authorization; a stale target is resolved again")
    func redirects() throws {
        let f = try RemoteImageFixture(mode: .basic, withProxy: true)
        let proxy = try #require(f.proxy)
        // The second host stands for object storage with a pre-signed URL: it adds the
        // registry credentials itself, and refuses its first request (an expired URL).
        let basic = "Authorization: Basic " + Data("\(RemoteImageFixture.user):\(RemoteImageFixture.password)".utf8).base64EncodedString()
        let storage = try FaultProxy(upstreamPort: f.registry.port, bindAddress: "127.0.0.2", extraHeaders: [basic])
        storage.setPolicy { _, n in n == 0 ? .status(403) : .pass }
        // Like a real registry, redirect only requests that passed authentication.
        proxy.setPolicy { request, _ in request.isBlobRead && request.headers["authorization"] != nil ? .redirect(base: storage.base) : .pass }
        let image = try Self.open(f)
        let d = try Self.digest(image)
        #expect(d.full == RemoteImageFixture.expected.full)
        #expect(storage.requests > 2)
        #expect(storage.requestsWithAuthorization == 0, "the registry's Authorization went to another host")
        #expect(proxy.requestsWithAuthorization > 0)
    }

    @Test("a warm cache serves a reopened image with zero registry requests")
    func warmCache() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        do {
            let image = try Self.open(f)
            _ = try Self.digest(image)
        }
        #expect(proxy.blobReads > 0)
        proxy.resetCounters()
        let again = try Self.open(f)
        #expect(try Self.digest(again).full == RemoteImageFixture.expected.full)
        #expect(proxy.requests == 0)
    }

    @Test("background download: verified overlaybd.commit, reads switch to it; a corrupt download is fetched again")
    func backgroundDownload() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        try f.writeImage(download: #"{"enable": true, "delay": 0, "delayExtra": 1, "maxMBps": 100, "blockSize": 65536}"#, withDirs: true)
        // A leftover partial download full of garbage: kept chunks fail verification.
        _ = run(["/bin/mkdir", "-p", f.layerDir(0)])
        var g = SplitMix64(seed: 77)
        try LocalFile(path: f.layerDir(0) + "/.download", mode: .createTruncate).writeBytes(g.bytes(f.layers[0].count), at: 0)
        let messages = Mutex<[String]>([])
        let image = try Self.open(f) { m in messages.withLock { $0.append(m) } }
        var waited = 0
        while !image.remoteLayers.allSatisfy({ $0.isLocal }) && waited < 300 {
            usleep(100_000)
            waited += 1
        }
        let allLocal = image.remoteLayers.allSatisfy { $0.isLocal }
        #expect(allLocal, "\(messages.withLock { $0 })")
        for (i, d) in f.digests.enumerated() {
            let commit = try LocalFile(path: f.layerDir(i) + "/overlaybd.commit")
            #expect("sha256:" + Digest.sha256(try commit.readBytes(at: 0, count: Int(commit.size))) == d)
            #expect(access(f.layerDir(i) + "/.download", F_OK) != 0)
        }
        #expect(messages.withLock { $0 }.contains { $0.contains("expected \(f.digests[0])") }, "the corrupt download was detected")
        let proxy = try #require(f.proxy)
        proxy.resetCounters()
        #expect(try Self.digest(image).full == RemoteImageFixture.expected.full)
        #expect(proxy.requests == 0, "reads still went to the registry after the switch")
        // Reopened, the image finds the local copies first.
        let again = try Self.open(f)
        #expect(!again.hasRemoteLowers)
    }

    @Test("TLS: verified against the configured CA; refused without it; insecureHosts is an explicit opt-out")
    func tls() throws {
        let f = try RemoteImageFixture(mode: .anonymous, tls: true)
        // No CA: the system bundle does not know the test CA.
        try f.writeGlobal(timeoutSeconds: 20)
        let start = monotonicSeconds()
        do { _ = try Self.open(f); Issue.record("an unknown certificate was accepted") } catch {
            #expect("\(error)".contains("Connection failed") && "\(error)".contains("certificate"), "\(error)")
        }
        #expect(monotonicSeconds() - start < 5, "a certificate failure is final, not retried until the deadline")
        try f.writeGlobal(caFile: f.registry.caFile)
        let image = try Self.open(f)
        #expect(try Self.digest(image).full == RemoteImageFixture.expected.full)
        try f.writeGlobal(cacheDir: f.dir.file("cache2"), insecureHosts: [f.registry.host])
        let insecure = try Self.open(f)
        #expect(try Self.digest(insecure).first == RemoteImageFixture.expected.first4MiB)
    }

    @Test("a cache folder held by another process: the image reads uncached (and says so), bytes exact")
    func cacheInUse() throws {
        let f = try RemoteImageFixture(mode: .anonymous)
        _ = run(["/bin/mkdir", "-p", f.cacheDir])
        let holder = try holdLockInAnotherProcess(f.cacheDir + "/.lock")
        defer { kill(holder, SIGKILL); var st: Int32 = 0; waitpid(holder, &st, 0) }
        let messages = Mutex<[String]>([])
        let image = try Self.open(f) { m in messages.withLock { $0.append(m) } }
        #expect(messages.withLock { $0 }.contains { $0.contains("in use by another process") })
        #expect(try Self.digest(image).first == RemoteImageFixture.expected.first4MiB)
    }
}
