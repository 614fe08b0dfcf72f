import BlockIO
import FoundationEssentials
import Glibc
import Image
import Registry
import Synchronization
import TestSupport
import Testing
import Threading

/// `overlaybd.json` policies for remote lowers: P2P (`p2pConfig`), the outage policy
/// (`registryConfig.blockOnOutage`), credential files that change while the image runs.
@Suite("Remote lowers: P2P, outages, rotated credentials", .serialized, .enabled(if: RemoteImageFixture.available))
struct RemotePolicyTests {
    static func digest(_ image: Image) throws -> String {
        let disk = image.stack
        return try Digest.sha256(size: disk.size) { try disk.read(into: $0, at: $1) }
    }

    /// The image's log lines.
    final class Messages: Sendable {
        private let lines = Mutex<[String]>([])
        func add(_ m: String) { lines.withLock { $0.append(m) } }
        var all: [String] { lines.withLock { $0 } }
    }

    static func open(_ f: RemoteImageFixture, messages: Messages? = nil) throws -> Image {
        try Image.open(configPath: f.configPath, global: GlobalConfig.load(from: f.globalPath)) { m in messages?.add(m) }
    }

    static func p2pConfig(_ address: String) -> String { #""p2pConfig": {"enable": true, "address": "\#(address)"}"# }

    @Test("P2P: range reads go to <address>/<blob URL>, exact bytes; the local cache stays in front of it")
    func p2pReads() throws {
        let f = try RemoteImageFixture(mode: .basic, withProxy: true)
        let registry = try #require(f.proxy)
        let p2p = try FaultProxy(forwardingPrefix: "/accelerator")
        try f.writeGlobal(refillSize: 65536, extra: Self.p2pConfig(p2p.address))
        let messages = Messages()
        do {
            let image = try Self.open(f, messages: messages)
            #expect(try Self.digest(image) == RemoteImageFixture.expected.full)
        }
        #expect(messages.all.contains { $0.contains("answers") }, "\(messages.all)")
        #expect(p2p.blobReads > 0, "no read went through the P2P proxy")
        // Every blob read the registry saw came through the proxy, with the registry's
        // credentials (the proxy fetches on the client's behalf).
        #expect(registry.blobReads == p2p.blobReads, "registry \(registry.blobReads), P2P \(p2p.blobReads)")
        #expect(p2p.requestsWithAuthorization > 0)
        #expect(!messages.all.joined().contains(RemoteImageFixture.password))
        // Reopened: the cache answers, neither the proxy nor the registry is asked.
        p2p.resetCounters()
        registry.resetCounters()
        let again = try Self.open(f)
        #expect(try Self.digest(again) == RemoteImageFixture.expected.full)
        #expect(p2p.requests == 0 && registry.requests == 0)
    }

    @Test("P2P proxy dying mid-read: reads fall back to the registry, no error, exact bytes")
    func p2pDiesMidRead() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let registry = try #require(f.proxy)
        let p2p = try FaultProxy(forwardingPrefix: "/accelerator")
        // The fourth request gets the head and 10 000 body bytes, then the proxy dies.
        p2p.setPolicy { r, n in r.isBlobRead && n == 3 ? .die(afterBytes: 10_000) : .pass }
        try f.writeGlobal(refillSize: 65536, extra: Self.p2pConfig(p2p.address))
        let messages = Messages()
        let image = try Self.open(f, messages: messages)
        #expect(try Self.digest(image) == RemoteImageFixture.expected.full)
        #expect(p2p.isStopped, "the proxy never died")
        #expect(p2p.blobReads >= 4)
        #expect(registry.blobReads > p2p.blobReads, "the reads after the proxy died did not reach the registry")
        #expect(messages.all.contains { $0.contains("P2P proxy") && $0.contains("failed") }, "\(messages.all)")
    }

    @Test("P2P proxy down at creation: reads go to the registry directly")
    func p2pDownAtCreation() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let registry = try #require(f.proxy)
        let p2p = try FaultProxy(forwardingPrefix: "/accelerator")
        p2p.stop()
        try f.writeGlobal(extra: Self.p2pConfig(p2p.address))
        let messages = Messages()
        let image = try Self.open(f, messages: messages)
        #expect(messages.all.contains { $0.contains("does not answer") }, "\(messages.all)")
        #expect(try Self.digest(image) == RemoteImageFixture.expected.full)
        #expect(p2p.requests == 0 && registry.blobReads > 0)
    }

    @Test("blockOnOutage: reads wait through an outage longer than the deadline and complete with the right bytes")
    func blockOnOutage() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        try LocalRegistry.write(f.globalPath, """
            {"cacheConfig": {"cacheType": "file", "cacheDir": "\(f.cacheDir)", "cacheSizeGB": 1, "refillSize": 65536},
             "credentialConfig": {"mode": "file", "path": "\(f.dir.file("cred.json"))"},
             "registryConfig": {"timeoutSeconds": 1, "blockOnOutage": true}}
            """)
        let image = try Self.open(f)
        // Everything is refused for 3 s (three deadlines), then the registry is back.
        let until = monotonicSeconds() + 3
        let seen = Mutex<(refused: Int, firstRefused: Double, firstPassed: Double)>((0, 0, 0))
        proxy.setPolicy { _, _ in
            let now = monotonicSeconds()
            return seen.withLock { r in
                guard now < until else {
                    if r.firstPassed == 0 { r.firstPassed = now }
                    return .pass
                }
                if r.refused == 0 { r.firstRefused = now }
                r.refused += 1
                return .drop
            }
        }
        #expect(try Self.digest(image) == RemoteImageFixture.expected.full)
        let r = seen.withLock { $0 }
        #expect(r.refused >= 2, "the outage was not hit (\(r.refused) refused requests)")
        // The subject is the deadline: the read that met the outage kept trying for longer
        // than it, until the registry was back (generous bound).
        #expect(r.firstPassed - r.firstRefused > 1.0, "waited \(r.firstPassed - r.firstRefused) s only")
    }

    /// Reads the whole disk under the image's token on a thread; the outcome arrives in `done`.
    static func readInBackground(_ image: Image, _ done: ConditionLock<String?>) throws -> JoinHandle {
        try NamedThread.spawn(name: "obd-test-reader") {
            var outcome = "read completed"
            do {
                let disk = CancellableFile(image.stack, token: image.cancellation)
                let d = try Digest.sha256(size: disk.size) { try disk.read(into: $0, at: $1) }
                if d != RemoteImageFixture.expected.full { outcome = "wrong bytes" }
            } catch { outcome = "\(error)" }
            done.withLock { $0 = outcome }
            done.notifyAll()
        }
    }

    /// The outcome in `done` once there is one, waiting at most `seconds`.
    static func outcome(_ done: ConditionLock<String?>, within seconds: Double) -> String? {
        done.withLock(when: { $0 != nil }, deadline: monotonicSeconds() + seconds) { $0 } ?? nil
    }

    @Test("blockOnOutage: cancelFetches ends the image's reads waiting out an outage or stuck in a transfer; another image reading the same cached blob keeps waiting and completes when the registry is back",
          arguments: [FaultProxy.Fault.drop, .delay(milliseconds: 8000)])
    func cancelDuringOutage(fault: FaultProxy.Fault) throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        try LocalRegistry.write(f.globalPath, """
            {"cacheConfig": {"cacheType": "file", "cacheDir": "\(f.cacheDir)", "cacheSizeGB": 1, "refillSize": 65536},
             "credentialConfig": {"mode": "file", "path": "\(f.dir.file("cred.json"))"},
             "registryConfig": {"timeoutSeconds": 1, "blockOnOutage": true}}
            """)
        // Two images over the same blobs share the process's cached files.
        let a = try Self.open(f), b = try Self.open(f)
        let outage = Atomic<Bool>(true)
        let seen = Atomic<Int>(0)
        proxy.setPolicy { _, _ in
            guard outage.load(ordering: .relaxed) else { return .pass }
            seen.add(1, ordering: .relaxed)
            return fault
        }
        let doneA = ConditionLock<String?>(nil), doneB = ConditionLock<String?>(nil)
        let readerA = try Self.readInBackground(a, doneA)
        let readerB = try Self.readInBackground(b, doneB)
        let metBy = monotonicSeconds() + 20
        while seen.load(ordering: .relaxed) < 2 && monotonicSeconds() < metBy { usleep(10_000) }
        try #require(seen.load(ordering: .relaxed) >= 2, "the reads never reached the proxy")
        // Longer than the 1 s deadline: without blockOnOutage both would have failed.
        #expect(Self.outcome(doneA, within: 1.5) == nil, "a read ended during the outage under blockOnOutage")
        a.cancelFetches()
        let outA = Self.outcome(doneA, within: 10)
        #expect(outA?.contains("cancelled") == true, "after cancelFetches: \(outA ?? "still blocked after 10 s")")
        if outA != nil { readerA.join() }
        // Later reads of A that need the network fail (B's retries go on meanwhile).
        let disk = CancellableFile(a.stack, token: a.cancellation)
        #expect(throws: (any Error).self) { _ = try Digest.sha256(size: disk.size) { try disk.read(into: $0, at: $1) } }
        // B was not cancelled: it is still waiting, and completes with the right bytes
        // once the registry is back (also where A's cancelled fetches left units missing).
        #expect(Self.outcome(doneB, within: 1.5) == nil, "B ended when A was cancelled")
        outage.store(false, ordering: .relaxed)
        let outB = Self.outcome(doneB, within: 60)
        #expect(outB == "read completed", "B: \(outB ?? "still blocked 60 s after the outage")")
        if outB != nil { readerB.join() }
        a.close()
        b.close()
    }

    @Test("a credential file rotated while the image runs is read again on 401; the new password is used without a restart")
    func rotatedCredentials() throws {
        let f = try RemoteImageFixture(mode: .basic)
        try f.writeGlobal(refillSize: 65536)
        let messages = Messages()
        let image = try Self.open(f, messages: messages)
        let disk = image.stack
        // Part of the disk is read with the old password...
        _ = try Digest.sha256(size: 4 << 20) { try disk.read(into: $0, at: $1) }
        // ...then the secret rotates: the client's file first, then the registry's htpasswd
        // (replaced atomically; docker-registry reloads it when it changes).
        let rotated = "r0tated-Secret-42"
        try f.writeCredentials(password: rotated)
        let h = run(["/usr/bin/htpasswd", "-Bbn", RemoteImageFixture.user, rotated])
        try #require(h.status == 0, "\(h.err)")
        let htpasswd = f.registry.dir.file("htpasswd")
        try LocalRegistry.write(htpasswd + ".new", h.out)
        try #require(rename(htpasswd + ".new", htpasswd) == 0)
        // The old password is refused now.
        let old = RegistryClient(host: f.registry.host, options: RegistryOptions(plainHTTP: true, credentials: CredentialStore(entries: [
            (f.registry.host, Credential(username: RemoteImageFixture.user, password: RemoteImageFixture.password)),
        ])))
        #expect(throws: RegistryError.self) { try old.blobSize(repository: f.repository, digest: f.digests[0]) }
        // The rest of the disk reads with the new one.
        #expect(try Self.digest(image) == RemoteImageFixture.expected.full)
        let all = messages.all.joined()
        #expect(!all.contains(rotated) && !all.contains(RemoteImageFixture.password))
    }

    @Test("config: blockOnOutage and p2pConfig are read; unknown keys and bad addresses are rejected")
    func config() throws {
        let dir = TemporaryDirectory("obd-policy-config")
        defer { dir.remove() }
        func parse(_ json: String) throws -> GlobalConfig { try GlobalConfig.parse(Data(json.utf8), path: dir.file("overlaybd.json")) }
        let g = try parse(#"{"registryConfig": {"blockOnOutage": true}, "p2pConfig": {"enable": true, "address": "localhost:19145/dadip2p"}}"#)
        #expect(g.registryConfig.blockOnOutage && g.p2pConfig.enable && g.p2pConfig.address == "localhost:19145/dadip2p")
        let d = try parse("{}")
        #expect(!d.registryConfig.blockOnOutage && !d.p2pConfig.enable && d.p2pConfig.address == "http://localhost:9731/accelerator")
        // A disabled P2P config is not checked further.
        #expect(try !parse(#"{"p2pConfig": {"address": "ftp://x"}}"#).p2pConfig.enable)
        for (json, phrase) in [
            (#"{"registryConfig": {"retryForever": true}}"#, "field 'registryConfig.retryForever': not a key obd implements"),
            (#"{"p2pConfig": {"enable": true, "proxyCacheSize": 1}}"#, "field 'p2pConfig.proxyCacheSize': not a key obd implements"),
            (#"{"p2pConfig": {"enable": true, "address": "http://host:0/x"}}"#, "field 'p2pConfig.address'"),
            (#"{"registryConfig": {"blockOnOutage": "yes"}}"#, "field 'registryConfig.blockOnOutage': expected a boolean"),
        ] {
            do {
                _ = try parse(json)
                Issue.record("accepted \(json)")
            } catch {
                #expect("\(error)".contains(phrase), "\(error)")
            }
        }
    }
}
