import BlockIO
import Ext4
import FoundationEssentials
import Glibc
import Image
import LSMT
import TestSupport

/// A TurboOCI image against the same image converted natively, both read lazily from a
/// registry through a counting proxy (`benchmarks/turbo-bench.sh` converts and pushes
/// them and writes the two config templates, whose `repoBlobUrl` host is `@HOST@`):
/// 1. a cold full read: open the image with an empty cache and read every mapped extent
///    of the disk in 4 MiB requests (what `obd export` does);
/// 2. cold 4 KiB random reads of file data, the proxy adding 20 ms per request: the same
///    files and file offsets in both images (their trees are equal; the files come from a
///    list), found through the ext4 of each (open and path lookups counted apart).
enum TurboBenchmarks {
    struct Run {
        var seconds = 0.0
        var requests = 0
        var bytes = 0
    }

    /// - Parameter files: paths of regular files of the image (one per line): where the
    ///   random reads go (resolved in each image's ext4 without reading file data).
    static func run(upstreamPort: UInt16, templates: [(name: String, path: String)], files: String, work: String, reads: Int) throws -> String {
        let lf = try LocalFile(path: files)
        let paths = String(decoding: try lf.readBytes(at: 0, count: Int(lf.size)), as: UTF8.self).split(separator: "\n").map(String.init)
        let dir = "\(work)/turbo"
        _ = TestSupport.run(["/bin/rm", "-rf", dir])
        _ = TestSupport.run(["/bin/mkdir", "-p", dir])
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var full: [Run] = []
        var open: [Run] = []
        var random: [(Run, [Double])] = []
        for (k, t) in templates.enumerated() {
            let tf = try LocalFile(path: t.path)
            let template = String(decoding: try tf.readBytes(at: 0, count: Int(tf.size)), as: UTF8.self)
            // 1. Cold full read, no added latency.
            let proxy = try FaultProxy(upstreamPort: upstreamPort)
            let cfg = try configs(dir: dir, name: "\(k)-full", template: template, host: proxy.host)
            let t0 = now()
            let image = try Image.open(configPath: cfg.image, global: GlobalConfig.load(from: cfg.global))
            try LazyBenchmarks.readAllData(image.stack, buf)
            full.append(Run(seconds: now() - t0, requests: proxy.blobReads, bytes: proxy.bodyBytes))
            image.close()
            // 2. Cold random 4 KiB reads of file data through a 20 ms proxy.
            let slow = try FaultProxy(upstreamPort: upstreamPort)
            slow.latencyMs.store(20, ordering: .relaxed)
            let rcfg = try configs(dir: dir, name: "\(k)-rand", template: template, host: slow.host)
            let o0 = now()
            let img = try Image.open(configPath: rcfg.image, global: GlobalConfig.load(from: rcfg.global))
            let fs = try Ext4Filesystem(file: img.stack, epoch: 1, writable: false)
            var rng = FastRandom(12)
            var targets: [UInt64] = []
            var tries = 0
            while targets.count < reads && tries < 100 * reads {
                tries += 1
                let p = paths[Int(rng.next() % UInt64(paths.count))]
                let pick = rng.next()
                guard let ino = fs.resolve(p.split(separator: "/").map(String.init)) else { continue }
                // Whole 4 KiB blocks of the file's extents (the tail block may be partial: skipped).
                let extents = try fs.extents(of: ino, path: p).filter { $0.length >= 4096 }
                let blocks = extents.reduce(UInt64(0)) { $0 + $1.length / 4096 }
                guard blocks > 0 else { continue }
                var k = pick % blocks
                for e in extents {
                    if k < e.length / 4096 { targets.append(e.diskOffset + k * 4096); break }
                    k -= e.length / 4096
                }
            }
            open.append(Run(seconds: now() - o0, requests: slow.blobReads, bytes: slow.bodyBytes))
            slow.resetCounters()
            let small = UnsafeMutableRawBufferPointer(rebasing: buf[0..<4096])
            var latencies: [Double] = []
            let r0 = now()
            for at in targets {
                let t = now()
                _ = try img.stack.read(into: small, at: at)
                latencies.append(now() - t)
            }
            random.append((Run(seconds: now() - r0, requests: slow.blobReads, bytes: slow.bodyBytes), latencies.sorted()))
            try fs.close()
            img.close()
        }
        _ = TestSupport.run(["/bin/rm", "-rf", dir])
        let names = templates.map(\.name)
        func ratio(_ a: Int, _ b: Int) -> String { fmt(Double(a) / Double(max(b, 1))) }
        var a = Table("Cold full read (open + every mapped extent in 4 MiB reads), empty cache, no added latency",
                      ["image", "seconds", "blob requests", "bytes fetched"])
        for (i, r) in full.enumerated() { a.add([names[i], fmt(r.seconds, 3), "\(r.requests)", "\(r.bytes)"]) }
        if full.count == 2 {
            a.add(["\(names[1]) / \(names[0])", fmt(full[1].seconds / full[0].seconds), ratio(full[1].requests, full[0].requests), ratio(full[1].bytes, full[0].bytes)])
        }
        var b = Table("Cold 4 KiB random reads of file data (QD1, \(reads) reads, the same files and offsets in both), proxy adds 20 ms per request",
                      ["image", "open + path lookups: requests / bytes / s", "reads: requests", "bytes fetched", "seconds", "p50 / p99 ms"])
        for (i, (r, l)) in random.enumerated() {
            let o = open[i]
            b.add([names[i], "\(o.requests) / \(o.bytes) / \(fmt(o.seconds, 2))", "\(r.requests)", "\(r.bytes)", fmt(r.seconds, 2),
                   "\(fmt(l[l.count / 2] * 1000, 1)) / \(fmt(l[min(l.count - 1, l.count * 99 / 100)] * 1000, 1))"])
        }
        if random.count == 2 {
            b.add(["\(names[1]) / \(names[0])", "-", ratio(random[1].0.requests, random[0].0.requests), ratio(random[1].0.bytes, random[0].0.bytes),
                   fmt(random[1].0.seconds / random[0].0.seconds), "-"])
        }
        return a.render() + "\n" + b.render()
    }

    /// The image config (template with `@HOST@` replaced) and a global config with a fresh
    /// registry cache (256 KiB refill, overlaybd's default) and no gzip disk cache.
    static func configs(dir: String, name: String, template: String, host: String) throws -> (image: String, global: String) {
        let image = "\(dir)/\(name).json", global = "\(dir)/\(name)-overlaybd.json"
        try LocalRegistry.write(image, template.replacingOccurrences(of: "@HOST@", with: host))
        try LocalRegistry.write(global, #"{"cacheConfig": {"cacheType": "file", "cacheDir": "\#(dir)/\#(name)-cache", "cacheSizeGB": 4}}"#)
        return (image, global)
    }
}
