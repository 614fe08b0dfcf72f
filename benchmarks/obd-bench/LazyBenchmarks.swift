import BlockIO
import Glibc
import Image
import LSMT
import Registry
import TestSupport
import ZFile

/// Lazy loading from a registry (docker-registry on loopback):
/// 1. a ~200 MB obd layer blob read sequentially through obd (registry -> cache ->
///    ZFile -> LSMT) vs `curl` downloading the same blob whole from the same registry;
/// 2. 4 KiB random reads with a proxy adding 20 ms per request: requests and bytes
///    fetched vs the minimum possible, and read latency percentiles.
enum LazyBenchmarks {
    /// The layer blob pushed to a fresh registry: what both measurements read.
    struct Setup {
        let dir: String
        let size: UInt64
        let blob: LocalFile
        let registry: LocalRegistry
        let digest: String
        let dataMiB: Int
    }

    static func prepare(work: String, corpus: LocalFile, quick: Bool) throws -> Setup {
        let dir = "\(work)/lazy"
        let dataMiB = quick ? 64 : 320
        let size = UInt64(dataMiB) << 20
        // The layer (kept between runs): the corpus written into a fresh layer, committed LZ4 ZFile + tar.
        let blobPath = "\(work)/lazy-layer-\(dataMiB).blob"
        _ = TestSupport.run(["/bin/rm", "-rf", dir])
        mkdir(dir, 0o755)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buf.deallocate() }
        if access(blobPath, R_OK) != 0 {
            let w = try WritableLayer.create(dataPath: "\(dir)/w.data", indexPath: "\(dir)/w.index", virtualSize: size)
            var off: UInt64 = 0
            while off < size {
                let src = off % (corpus.size - UInt64(buf.count))
                _ = try corpus.read(into: buf, at: src)
                try w.write(UnsafeRawBufferPointer(buf), at: off)
                off += UInt64(buf.count)
            }
            let segs = w.segments.map { var s = $0; s.tag = 0; return s }
            let out = try LocalFile(path: blobPath + ".tmp", mode: .createTruncate)
            let writer = try ZFileWriter(output: out, base: TarWrapper.payloadOffset, options: ZFileOptions(threads: 2))
            try LayerCommit.write(segments: segs, sources: [w.dataFile], virtualSize: size, defaultParent: .null,
                                  args: CommitArgs(), into: writer)
            try TarWrapper.wrap(output: out, payloadSize: writer.compressedSize)
            rename(blobPath + ".tmp", blobPath)
            unlink("\(dir)/w.data"); unlink("\(dir)/w.index")
        }
        let blob = try LocalFile(path: blobPath)
        let blobBytes = try blob.readBytes(at: 0, count: Int(blob.size))
        let registry = try LocalRegistry()
        let digest = try registry.push(repository: "bench/lazy", tag: "v1", layer: blobBytes)
        return Setup(dir: dir, size: size, blob: blob, registry: registry, digest: digest, dataMiB: dataMiB)
    }

    /// Only obd's cold sequential read, `rounds` times (for profiling: `perf record obd-bench lazy-cold`).
    static func coldOnly(work: String, corpus: LocalFile, quick: Bool, rounds: Int) throws -> String {
        let s = try prepare(work: work, corpus: corpus, quick: quick)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var out = ""
        for round in 0..<rounds {
            sync()
            let cfg = try writeConfigs(dir: s.dir, host: s.registry.host, digest: s.digest, blobSize: s.blob.size, cache: "\(s.dir)/cache\(round)")
            let cpu0 = processCPUSeconds(getpid()), reg0 = processCPUSeconds(s.registry.pid)
            let t0 = now()
            let image = try Image.open(configPath: cfg.image, global: GlobalConfig.load(from: cfg.global))
            try readAllData(image.stack, buf)
            let t = now() - t0
            let requests = image.remoteLayers.map { $0.blob.client.requestCount.load(ordering: .relaxed) }.reduce(0, +)
            out += "obd cold read round \(round): \(fmt(t, 3)) s, \(requests) requests, CPU obd \(fmt(processCPUSeconds(getpid()) - cpu0, 2)) s,"
                + " registry \(fmt(processCPUSeconds(s.registry.pid) - reg0, 2)) s\n"
            image.close()
            _ = TestSupport.run(["/bin/rm", "-rf", "\(s.dir)/cache\(round)"])
        }
        return out
    }

    static func run(work: String, corpus: LocalFile, quick: Bool) throws -> String {
        let s = try prepare(work: work, corpus: corpus, quick: quick)
        let (dir, size, blob, registry, digest, dataMiB) = (s.dir, s.size, s.blob, s.registry, s.digest, s.dataMiB)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buf.deallocate() }
        let blobURL = "http://\(registry.host)/v2/bench/lazy/blobs/\(digest)"

        var seq = Table("Lazy sequential read of a \(fmt(Double(blob.size) / 1e6, 1)) MB layer blob (\(dataMiB) MiB of data) from docker-registry on loopback",
                        ["reader", "seconds", "blob MB/s", "vs curl"])
        // Every timed run starts with no dirty pages left from the previous one (sync).
        let curlNull = best(5) { sync(); _ = TestSupport.run(["/usr/bin/curl", "-sf", "-o", "/dev/null", blobURL]) }
        var curlFile = Double.infinity
        for _ in 0..<5 {
            sync()
            let t0 = now()
            _ = TestSupport.run(["/usr/bin/curl", "-sf", "-o", "\(dir)/curl.out", blobURL])
            curlFile = min(curlFile, now() - t0)
            unlink("\(dir)/curl.out")
        }
        // The eager pull obd must not lose to: download the blob whole, then read all
        // its data locally through obd (as after `obd pull` or a tar.gz pull + unpack).
        var eager = Double.infinity
        for _ in 0..<5 {
            sync()
            let t0 = now()
            _ = TestSupport.run(["/usr/bin/curl", "-sf", "-o", "\(dir)/eager.blob", blobURL])
            let local = try LayerStack(lowers: [try LayerOpener.open(path: "\(dir)/eager.blob")])
            try readAllData(local, buf)
            eager = min(eager, now() - t0)
            unlink("\(dir)/eager.blob")
        }
        var obdBest = Double.infinity, warm = Double.infinity
        for round in 0..<5 {
            sync()
            let cfg = try writeConfigs(dir: dir, host: registry.host, digest: digest, blobSize: blob.size, cache: "\(dir)/cache\(round)")
            let t0 = now()
            let image = try Image.open(configPath: cfg.image, global: GlobalConfig.load(from: cfg.global))
            try readAllData(image.stack, buf)
            obdBest = min(obdBest, now() - t0)
            if round == 4 {
                warm = best(3) {
                    let again = try? Image.open(configPath: cfg.image, global: GlobalConfig.load(from: cfg.global))
                    if let again { try? readAllData(again.stack, buf) }
                }
            }
            _ = TestSupport.run(["/bin/rm", "-rf", "\(dir)/cache\(round)"])
        }
        let mb = Double(blob.size) / 1e6
        seq.add(["curl -o /dev/null", fmt(curlNull, 3), fmt(mb / curlNull, 0), "1.00"])
        seq.add(["curl -o file", fmt(curlFile, 3), fmt(mb / curlFile, 0), fmt(curlNull / curlFile)])
        seq.add(["eager: curl -o file, then read all data locally", fmt(eager, 3), fmt(mb / eager, 0), fmt(curlNull / eager)])
        seq.add(["obd (cold cache, open + read all data)", fmt(obdBest, 3), fmt(mb / obdBest, 0), fmt(curlNull / obdBest)])
        seq.add(["obd lazy vs eager (eager seconds / obd seconds)", "-", "-", fmt(eager / obdBest)])
        seq.add(["obd (warm cache: no network)", fmt(warm, 3), fmt(mb / warm, 0), fmt(curlNull / warm)])

        // Random 4 KiB reads through a proxy adding 20 ms per request: with overlaybd's
        // default refill unit (256 KiB) and with a small one (16 KiB).
        let proxy = try FaultProxy(upstreamPort: registry.port)
        proxy.latencyMs.store(20, ordering: .relaxed)
        let reads = quick ? 100 : 400
        var out = seq.render()
        for refill in [262_144, 16_384] {
            proxy.resetCounters()
            let cfg = try writeConfigs(dir: dir, host: proxy.host, digest: digest, blobSize: blob.size,
                                       cache: "\(dir)/cache-rand-\(refill)", refillSize: refill)
            let openStart = now()
            let image = try Image.open(configPath: cfg.image, global: GlobalConfig.load(from: cfg.global))
            let openTime = now() - openStart
            let openRequests = proxy.blobReads, openBytes = proxy.bodyBytes
            proxy.resetCounters()
            var rng = FastRandom(5)
            var latencies: [Double] = []
            var units = Set<UInt64>()
            let small = UnsafeMutableRawBufferPointer(rebasing: buf[0..<4096])
            for _ in 0..<reads {
                let at = (rng.next() % (size / 4096)) * 4096
                let t0 = now()
                _ = try image.stack.read(into: small, at: at)
                latencies.append(now() - t0)
                units.insert(at / 4096)
            }
            latencies.sort()
            func pct(_ p: Double) -> String { fmt(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] * 1000, 1) }
            var rand = Table("4 KiB random reads (QD1), proxy adds 20 ms per request; \(reads) reads, cold cache, refillSize \(refill / 1024) KiB",
                             ["measure", "value", "minimum possible", "ratio"])
            rand.add(["open: requests / bytes / seconds", "\(openRequests) / \(openBytes) / \(fmt(openTime, 3))", "-", "-"])
            rand.add(["requests issued", "\(proxy.blobReads)", "\(units.count) (one per distinct 4 KiB read)",
                      fmt(Double(proxy.blobReads) / Double(max(units.count, 1)))])
            rand.add(["bytes fetched", "\(proxy.bodyBytes)", "\(units.count * 4096) (the 4 KiB blocks read)",
                      fmt(Double(proxy.bodyBytes) / Double(max(units.count * 4096, 1)))])
            rand.add(["latency p50 / p90 / p99 ms", "\(pct(0.5)) / \(pct(0.9)) / \(pct(0.99))", "20.0 (one proxied request)",
                      fmt(latencies[latencies.count / 2] / 0.020)])
            out += "\n" + rand.render()
        }
        _ = TestSupport.run(["/bin/rm", "-rf", dir])
        return out
    }

    static func writeConfigs(dir: String, host: String, digest: String, blobSize: UInt64, cache: String,
                             refillSize: Int = 262_144) throws -> (image: String, global: String) {
        let image = "\(dir)/config.v1.json", global = "\(dir)/overlaybd.json"
        try LocalRegistry.write(image, #"{"repoBlobUrl": "http://\#(host)/v2/bench/lazy/blobs", "lowers": [{"digest": "\#(digest)", "size": \#(blobSize)}]}"#)
        try LocalRegistry.write(global, #"{"cacheConfig": {"cacheType": "file", "cacheDir": "\#(cache)", "cacheSizeGB": 4, "refillSize": \#(refillSize)}}"#)
        return (image, global)
    }

    /// Reads every data extent of the disk in 4 MiB requests (what `obd export` does).
    static func readAllData(_ disk: LayerStack, _ buf: UnsafeMutableRawBufferPointer) throws {
        for s in disk.flattenedIndex() where !s.zeroed {
            var off = s.offset * 512
            let end = s.end * 512
            while off < end {
                let n = Int(min(UInt64(buf.count), end - off))
                off += UInt64(try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]), at: off))
            }
        }
    }
}

/// User plus system CPU seconds a process has used so far (/proc/PID/stat).
func processCPUSeconds(_ pid: pid_t) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return 0 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    guard fields.count > 12, let u = Double(fields[11]), let k = Double(fields[12]) else { return 0 }
    return (u + k) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
