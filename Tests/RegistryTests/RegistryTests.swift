import BlockIO
import FoundationEssentials
import Glibc
import Registry
import Synchronization
import TestSupport
import Testing
import Threading

@Suite("Registry: references, credentials, challenges")
struct RegistryParsingTests {
    @Test("image references with Docker Hub defaults")
    func references() throws {
        let a = try ImageReference(parsing: "ubuntu")
        #expect(a == ImageReference(host: "registry-1.docker.io", repository: "library/ubuntu", tag: "latest"))
        let b = try ImageReference(parsing: "127.0.0.1:5000/obd/test:v1")
        #expect(b.host == "127.0.0.1:5000" && b.repository == "obd/test" && b.tag == "v1")
        let d = "sha256:" + String(repeating: "a", count: 64)
        let c = try ImageReference(parsing: "localhost/x@\(d)")
        #expect(c.host == "localhost" && c.digest == d && c.tag == nil && c.reference == d)
        let e = try ImageReference(parsing: "docker.io/me/app:1.0@\(d)")
        #expect(e.repository == "me/app" && e.tag == "1.0" && e.digest == d)
        for bad in ["", "UPPER/case", "a b", "x@sha256:123", "x:", "x//y"] {
            #expect(throws: RegistryError.self) { try ImageReference(parsing: bad) }
        }
    }

    @Test("credentials from cred.json and docker config.json; never printed")
    func credentials() throws {
        let json = #"{"auths":{"127.0.0.1:5000/obd":{"username":"u1","password":"p1"},"registry.example":{"auth":"dTI6cDI="}}}"#
        let store = try CredentialStore.parse(Data(json.utf8))
        #expect(store.credential(host: "127.0.0.1:5000", repository: "obd/test")?.password == "p1")
        #expect(store.credential(host: "127.0.0.1:5000", repository: "other/x") == nil)
        #expect(store.credential(host: "registry.example", repository: "any")?.username == "u2")
        #expect(!"\(store.credential(host: "registry.example", repository: "any")!)".contains("p2"))
    }
}

@Suite("Registry against docker-registry on loopback", .serialized, .enabled(if: LocalRegistry.available || ReferenceFiles.isCI))
struct RegistryIntegrationTests {
    static func layer() throws -> [UInt8] {
        if ReferenceFiles.present {
            let f = try LocalFile(path: ReferenceFiles.path("lsmt/l1/layer1.commit.lz4.zfile"))
            return try f.readBytes(at: 0, count: Int(f.size))
        }
        var g = SplitMix64(seed: 3)
        return g.bytes(300_000)
    }

    @Test("anonymous: manifest, blob size and random range reads equal the pushed bytes")
    func anonymous() throws {
        let reg = try LocalRegistry()
        let bytes = try Self.layer()
        let digest = try reg.push(repository: "obd/test", tag: "v1", layer: bytes)
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        let m = try client.manifest(repository: "obd/test", reference: "v1")
        #expect(String(decoding: m.bytes, as: UTF8.self).contains(digest))
        let blob = try RemoteBlob(client: client, repository: "obd/test", digest: digest)
        #expect(blob.size == UInt64(bytes.count))
        var g = SplitMix64(seed: 8)
        for _ in 0..<50 {
            let off = Int(g.next() % UInt64(bytes.count))
            let n = min(Int(g.next() % 70_000) + 1, bytes.count - off)
            #expect(try blob.readBytes(at: UInt64(off), count: n)[...] == bytes[off..<(off + n)])
        }
        #expect(throws: RegistryError.self) { try client.blobSize(repository: "obd/test", digest: "sha256:" + String(repeating: "0", count: 64)) }
        #expect(throws: RegistryError.self) { try client.manifest(repository: "obd/none", reference: "v1") }
    }

    @Test("Basic auth: right credentials read; wrong ones give 'Authentication failed' without the secret")
    func basicAuth() throws {
        let reg = try LocalRegistry(auth: .htpasswd(user: "obd", password: "s3cret-pass"))
        let bytes = try Self.layer()
        let digest = try reg.push(repository: "obd/auth", tag: "v1", layer: bytes, credentials: "obd:s3cret-pass")
        let good = CredentialStore(entries: [(reg.host, Credential(username: "obd", password: "s3cret-pass"))])
        var opts = RegistryOptions(plainHTTP: true, credentials: good)
        let client = RegistryClient(host: reg.host, options: opts)
        let blob = try RemoteBlob(client: client, repository: "obd/auth", digest: digest)
        #expect(try blob.readBytes(at: 100, count: 5000)[...] == bytes[100..<5100])
        opts.credentials = CredentialStore(entries: [(reg.host, Credential(username: "obd", password: "wrong-pass"))])
        let bad = RegistryClient(host: reg.host, options: opts)
        do {
            _ = try bad.blobSize(repository: "obd/auth", digest: digest)
            Issue.record("wrong credentials were accepted")
        } catch {
            #expect("\(error)".contains("Authentication failed"))
            #expect(!"\(error)".contains("wrong-pass") && !"\(error)".contains("s3cret"))
        }
        let anonymous = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true))
        #expect(throws: RegistryError.self) { try anonymous.manifest(repository: "obd/auth", reference: "v1") }
    }

    @Test("token auth: Bearer tokens from the challenge's realm, cached; wrong credentials fail cleanly")
    func tokenAuth() throws {
        let tokens = try TokenServer(user: "obd", password: "t0ken-pass")
        defer { tokens.stop() }
        let reg = try LocalRegistry(auth: .token(tokens))
        let bytes = try Self.layer()
        let digest = try reg.push(repository: "obd/token", tag: "v1", layer: bytes, credentials: "obd:t0ken-pass")
        let creds = CredentialStore(entries: [(reg.host, Credential(username: "obd", password: "t0ken-pass"))])
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true, credentials: creds))
        let blob = try RemoteBlob(client: client, repository: "obd/token", digest: digest)
        let before = tokens.issued
        for i in 0..<10 {
            #expect(try blob.readBytes(at: UInt64(i * 1000), count: 3000)[...] == bytes[(i * 1000)..<(i * 1000 + 3000)])
        }
        #expect(tokens.issued == before, "the token is cached across reads")
        let bad = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true,
            credentials: CredentialStore(entries: [(reg.host, Credential(username: "obd", password: "nope-nope"))])))
        do {
            _ = try bad.manifest(repository: "obd/token", reference: "v1")
            Issue.record("wrong credentials were accepted")
        } catch {
            #expect("\(error)".contains("Authentication failed") && !"\(error)".contains("nope-nope"))
        }
    }

    @Test("transfers overlap on the multi handle; identical in-flight ranges are fetched once")
    func concurrency() throws {
        let reg = try LocalRegistry()
        let bytes = try Self.layer()
        let digest = try reg.push(repository: "obd/multi", tag: "v1", layer: bytes)
        let proxy = try FaultProxy(upstreamPort: reg.port)
        proxy.latencyMs.store(300, ordering: .relaxed)
        let client = RegistryClient(host: proxy.host, options: RegistryOptions(plainHTTP: true))
        let blob = try RemoteBlob(client: client, repository: "obd/multi", digest: digest, size: UInt64(bytes.count))
        // 16 different ranges at once: the proxy must see them in flight together.
        let wrong = Atomic<Int>(0)
        var readers: [JoinHandle] = []
        for i in 0..<16 {
            readers.append(try NamedThread.spawn(name: "reader") {
                let off = i * 9000
                if let got = try? blob.readBytes(at: UInt64(off), count: 8000), got[...] == bytes[off..<(off + 8000)] {} else {
                    wrong.add(1, ordering: .relaxed)
                }
            })
        }
        for r in readers { r.join() }
        #expect(wrong.load(ordering: .relaxed) == 0)
        #expect(proxy.peakConcurrentRequests >= 4, "at most \(proxy.peakConcurrentRequests) requests overlapped")
        // 8 callers of one range at once: one request.
        proxy.resetCounters()
        readers = []
        for _ in 0..<8 {
            readers.append(try NamedThread.spawn(name: "reader") {
                if let got = try? blob.readBytes(at: 5000, count: 20000), got[...] == bytes[5000..<25000] {} else {
                    wrong.add(1, ordering: .relaxed)
                }
            })
        }
        for r in readers { r.join() }
        #expect(wrong.load(ordering: .relaxed) == 0)
        #expect(proxy.blobReads < 8 && blob.coalesced.load(ordering: .relaxed) >= 1, "\(proxy.blobReads) requests for one range")
    }

    @Test("blob upload: monolithic and chunked (PATCH per chunk) both land the exact bytes; a mount from another repository")
    func upload() throws {
        let reg = try LocalRegistry(auth: .htpasswd(user: "up", password: "up-Pa55"))
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true,
            credentials: CredentialStore(entries: [(reg.host, Credential(username: "up", password: "up-Pa55"))])))
        var g = SplitMix64(seed: 21)
        for (size, chunk) in [(100_000, 1 << 20), (3 * 1_048_576 + 12_345, 1 << 20)] {
            let bytes = g.bytes(size)
            let digest = "sha256:" + Digest.sha256(bytes)
            let file = MemoryFile(bytes: bytes, name: "blob", writable: false)
            #expect(try !client.hasBlob(repository: "up/a", digest: digest))
            try client.uploadBlob(repository: "up/a", digest: digest, file: file, chunkSize: chunk)
            #expect(try client.hasBlob(repository: "up/a", digest: digest))
            let back = try RemoteBlob(client: client, repository: "up/a", digest: digest)
            #expect(try back.readBytes(at: 0, count: size) == bytes)
            #expect(try client.mountBlob(repository: "up/b", digest: digest, from: "up/a"))
            #expect(try client.hasBlob(repository: "up/b", digest: digest))
        }
        // A wrong digest is refused by the registry: never stored under the wrong name.
        let bytes = g.bytes(5000)
        #expect(throws: RegistryError.self) {
            try client.uploadBlob(repository: "up/a", digest: "sha256:" + String(repeating: "0", count: 64),
                                  file: MemoryFile(bytes: bytes, name: "x", writable: false))
        }
    }
}
