import Glibc
import Testing
import TestSupport

/// obd export / serve nbd / pull with remote lowers, as processes, against docker-registry.
@Suite("obd with remote lowers", .serialized, .enabled(if: RemoteImageFixture.available))
struct RemoteCLITests {
    let obd = builtProduct("obd")

    func fileDigest(_ path: String) throws -> String {
        let r = run(["/usr/bin/sha256sum", path])
        guard r.status == 0, let hex = r.out.split(separator: " ").first else { throw Failure("sha256sum \(path): \(r.err)") }
        return String(hex)
    }

    struct Failure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    func export(_ f: RemoteImageFixture, to out: String) -> (status: Int32, out: String, err: String) {
        run([obd, "export", f.configPath, "--config", f.globalPath, "-o", out])
    }

    @Test("obd serve nbd of an all-remote image reads back, through qemu-img, the local bytes (every auth mode)",
          arguments: RemoteImageFixture.Mode.allCases)
    func serveNBD(mode: RemoteImageFixture.Mode) throws {
        let f = try RemoteImageFixture(mode: mode)
        let sock = f.dir.file("nbd.sock"), log = f.dir.file("serve.log")
        let pid = try ServeNBDTests.start([f.configPath, "--config", f.globalPath, "--socket", sock], socket: sock, log: log)
        let r = run(["/usr/bin/qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd+unix:///?socket=" + sock, f.dir.file("disk.raw")])
        #expect(r.status == 0, "\(r.err)")
        #expect(ServeNBDTests.stop(pid) == 0)
        #expect(try fileDigest(f.dir.file("disk.raw")) == RemoteImageFixture.expected.full)
        #expect(!readText(log).contains(RemoteImageFixture.password))
    }

    @Test("obd export: a restart with a warm cache makes zero registry requests")
    func warmRestart() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        let first = export(f, to: f.dir.file("a.raw"))
        #expect(first.status == 0, "\(first.err)")
        #expect(proxy.blobReads > 0)
        proxy.resetCounters()
        let second = export(f, to: f.dir.file("b.raw"))
        #expect(second.status == 0, "\(second.err)")
        #expect(proxy.requests == 0, "a warm cache still asked the registry")
        #expect(try fileDigest(f.dir.file("b.raw")) == RemoteImageFixture.expected.full)
    }

    @Test("killing obd during cache refills never leads to wrong bytes on the next run")
    func killDuringRefill() throws {
        let f = try RemoteImageFixture(mode: .anonymous, withProxy: true)
        let proxy = try #require(f.proxy)
        proxy.latencyMs.store(3, ordering: .relaxed)
        var g = SplitMix64(seed: UInt64(getpid()))
        for round in 0..<12 {
            // A fresh cache per round, small refill units: many refills to interrupt.
            let cache = f.dir.file("cache-\(round)")
            try f.writeGlobal(refillSize: 4096, cacheDir: cache)
            for _ in 0..<2 {
                guard let pid = spawn([obd, "export", f.configPath, "--config", f.globalPath, "-o", "/dev/null"], stdout: "/dev/null", stderr: "/dev/null") else {
                    throw Failure("spawn failed")
                }
                usleep(UInt32(50_000 + Int(g.next() % 400_000)))
                kill(pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
            let out = f.dir.file("round.raw")
            let r = export(f, to: out)
            #expect(r.status == 0, "\(r.err)")
            #expect(try fileDigest(out) == RemoteImageFixture.expected.full, "round \(round): wrong bytes after kills")
            _ = run(["/bin/rm", "-rf", cache, out])
        }
    }

    @Test("obd pull honours overlaybd.json's TLS settings: caFile verifies, insecureHosts opts out, none refuses")
    func pullUsesTheGlobalRegistrySetup() throws {
        let f = try RemoteImageFixture(mode: .anonymous, tls: true)
        let ref = "\(f.host)/\(f.repository):v1"
        try f.writeGlobal(timeoutSeconds: 20)
        let refused = run([obd, "pull", "--config", f.globalPath, ref])
        #expect(refused.status != 0 && refused.err.contains("certificate"), "\(refused.err)")
        try f.writeGlobal(caFile: f.registry.caFile)
        let verified = run([obd, "pull", "--config", f.globalPath, ref])
        #expect(verified.status == 0 && verified.out.contains(f.digests[0]), "\(verified.err)")
        try f.writeGlobal(insecureHosts: [f.registry.host])
        let optedOut = run([obd, "pull", "--config", f.globalPath, ref])
        #expect(optedOut.status == 0 && optedOut.out.contains(f.digests[0]), "\(optedOut.err)")
    }

    @Test("obd pull --prefetch-all fetches and verifies every layer; later reads need no registry; corruption is refused")
    func pullPrefetchAll() throws {
        let f = try RemoteImageFixture(mode: .basic, withProxy: true)
        let proxy = try #require(f.proxy)
        let ref = "\(f.host)/\(f.repository):v1"
        // A corrupted body: the pull fails, nothing is reported as verified.
        proxy.setPolicy { request, _ in request.isBlobRead && request.headers["range"]?.hasPrefix("bytes=0-") == true ? .corrupt : .pass }
        let bad = run([obd, "pull", "--prefetch-all", "--plain-http", "--config", f.globalPath, ref])
        #expect(bad.status != 0 && bad.err.contains("digest mismatch"), "\(bad.err)")
        #expect(!bad.out.contains("verified"))
        proxy.setPolicy { _, _ in .pass }
        let good = run([obd, "pull", "--prefetch-all", "--plain-http", "--concurrency", "4", "--chunk-mib", "1", "--config", f.globalPath, ref])
        #expect(good.status == 0 && good.out.contains("pulled 2 layer(s)") && good.out.contains("all verified"), "\(good.out) \(good.err)")
        #expect(!good.err.contains(RemoteImageFixture.password))
        proxy.resetCounters()
        let e = export(f, to: f.dir.file("disk.raw"))
        #expect(e.status == 0, "\(e.err)")
        #expect(proxy.requests == 0, "the prefetched cache was not used")
        #expect(try fileDigest(f.dir.file("disk.raw")) == RemoteImageFixture.expected.full)
        // Into files instead of the cache.
        let outDir = f.dir.file("blobs")
        _ = run(["/bin/mkdir", "-p", outDir])
        let files = run([obd, "pull", "--prefetch-all", "--plain-http", "--output-dir", outDir, "--config", f.globalPath, ref])
        #expect(files.status == 0, "\(files.err)")
        for (d, bytes) in zip(f.digests, f.layers) {
            #expect(try fileDigest(outDir + "/" + d) == Digest.sha256(bytes))
        }
    }

    @Test("obd serve nbd exposes Prometheus metrics: device reads, registry fetches, cache misses")
    func metrics() throws {
        let f = try RemoteImageFixture(mode: .anonymous)
        try f.writeGlobal(extra: #""exporterConfig": {"enable": true, "port": 0, "address": "127.0.0.1", "uriPrefix": "/metrics"}"#)
        let sock = f.dir.file("nbd.sock"), log = f.dir.file("serve.log")
        let pid = try ServeNBDTests.start([f.configPath, "--config", f.globalPath, "--socket", sock, "--name", "dev0"], socket: sock, log: log)
        defer { _ = ServeNBDTests.stop(pid) }
        let r = run(["/usr/bin/qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd+unix:///dev0?socket=" + sock, f.dir.file("disk.raw")])
        #expect(r.status == 0, "\(r.err)")
        let text = readText(log)
        guard let at = text.range(of: "metrics on http://") else { Issue.record("no metrics line: \(text)"); return }
        let url = String(text[at.upperBound...].prefix { $0 != "\n" })
        let m = run(["/usr/bin/curl", "-sf", "http://" + url])
        #expect(m.status == 0, "\(m.err)")
        for name in ["obd_device_read_bytes_total{device=\"dev0\"}", "obd_registry_fetches_total", "obd_cache_misses_total", "obd_registry_fetch_duration"] {
            #expect(m.out.contains(name), "\(name) missing in \(m.out)")
        }
        let miss = run(["/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://" + url.replacingOccurrences(of: "/metrics", with: "/other")])
        #expect(miss.out == "404")
    }
}
