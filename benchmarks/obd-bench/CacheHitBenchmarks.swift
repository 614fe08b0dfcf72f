import BlockCache
import BlockIO
import Glibc
import Synchronization
import TestSupport
import Threading

/// Cache hits: 4 KiB random reads of a fully cached 64 MiB blob through `CachedFile`,
/// from 1, 2 and 16 threads, while the cache holds 256 other blobs, vs `pread` of the
/// same data file with the same threads (the physical limit of a hit: one pread).
enum CacheHitBenchmarks {
    static func run(work: String, quick: Bool) throws -> String {
        let dir = "\(work)/cache-hit"
        _ = TestSupport.run(["/bin/rm", "-rf", dir])
        mkdir(dir, 0o755)
        let size: UInt64 = 64 << 20
        var seed = FastRandom(7)
        var bytes = [UInt8](repeating: 0, count: Int(size))
        for i in stride(from: 0, to: bytes.count, by: 8) {
            withUnsafeBytes(of: seed.next()) { for (j, b) in $0.enumerated() { bytes[i + j] = b } }
        }
        let upstream = MemoryFile(bytes: bytes, name: "bench-blob", writable: false)
        let cache = try BlockCache(directory: "\(dir)/cache", capacity: 8 << 30, refillSize: 256 << 10)
        cache.readahead = 0
        // Other blobs in the cache: a hit must not cost in proportion to them.
        var others: [CachedFile] = []
        for i in 0..<256 {
            let small = MemoryFile(bytes: [UInt8](repeating: UInt8(i & 0xff), count: 256 << 10), name: "other\(i)", writable: false)
            let f = try cache.open(key: "other\(i)", upstream: small)
            _ = try f.readBytes(at: 0, count: 4096)
            others.append(f)
        }
        let cached = try cache.open(key: "blob", upstream: upstream)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < size { off += UInt64(try cached.read(into: buf, at: off)) }
        let plain = try LocalFile(path: "\(dir)/cache/blob", map: false)
        let reads = quick ? 100_000 : 400_000

        var table = Table("Cache hits: 4 KiB random reads of a cached 64 MiB blob (256 other blobs cached), \(reads) reads per run",
                          ["threads", "obd CachedFile M reads/s", "pread of the cache file M reads/s", "obd / pread"])
        for threads in [1, 2, 16] {
            let o = bestRate(threads: threads, reads: reads, size: size) { b, at in _ = try cached.read(into: b, at: at) }
            let p = bestRate(threads: threads, reads: reads, size: size) { b, at in _ = try plain.read(into: b, at: at) }
            table.add(["\(threads)", fmt(o / 1e6, 3), fmt(p / 1e6, 3), fmt(o / p)])
        }
        withExtendedLifetime(others) {}
        return table.render()
    }

    /// Best of 3 runs: reads per second over `threads` threads splitting `reads` reads.
    static func bestRate(threads: Int, reads: Int, size: UInt64,
                         _ read: @escaping @Sendable (UnsafeMutableRawBufferPointer, UInt64) throws -> Void) -> Double {
        var bestSeconds = Double.infinity
        for _ in 0..<3 {
            let finished = Atomic<Int>(0)
            let perThread = reads / threads
            let t0 = now()
            for t in 0..<threads {
                try? NamedThread.detach(name: "bench-reader") {
                    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                    defer { b.deallocate() }
                    var r = FastRandom(UInt64(t + 1) * 0x9E37_79B9)
                    for _ in 0..<perThread {
                        try? read(b, (r.next() % (size / 4096)) * 4096)
                    }
                    finished.add(1, ordering: .releasing)
                }
            }
            while finished.load(ordering: .acquiring) < threads { usleep(200) }
            bestSeconds = min(bestSeconds, now() - t0)
        }
        return Double(reads / threads * threads) / bestSeconds
    }
}
