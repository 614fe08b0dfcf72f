import BlockIO
import Glibc
import Image
import LSMT
import Synchronization
import Threading
import Trace
import ZFile

/// Trace recording on the read path: 4 KiB random reads of a stack over one LZ4 ZFile
/// layer, plain vs with the recording decorator idle vs recording, from 1 and 2 threads.
/// The anchor is the plain stack: recording must not slow reads measurably.
enum TraceBenchmarks {
    static func run(work: String, corpus: LocalFile, reads: Int) throws -> String {
        let size = min(UInt64(64 << 20), corpus.size / (1 << 20) * (1 << 20))
        let d = "\(work)/trace-w.data", x = "\(work)/trace-w.index", blob = "\(work)/trace-layer.zfile"
        unlink(d); unlink(x); unlink(blob)
        let w = try WritableLayer.create(dataPath: d, indexPath: x, virtualSize: size)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < size {
            _ = try corpus.read(into: buf, at: off)
            try w.write(UnsafeRawBufferPointer(buf), at: off)
            off += UInt64(buf.count)
        }
        let out = try LocalFile(path: blob, mode: .createTruncate)
        let writer = try ZFileWriter(output: out, options: ZFileOptions(threads: 2))
        try LayerCommit.write(segments: w.segments.map { var s = $0; s.tag = 0; return s }, sources: [w.dataFile],
                              virtualSize: size, defaultParent: .null, args: CommitArgs(), into: writer)
        unlink(d); unlink(x)
        let (inner, _) = try LayerOpener.unwrap(LocalFile(path: blob))
        let recorder = TraceRecorder()
        let plain = try LayerStack(lowers: [ReadOnlyLayer(file: inner)])
        let traced = try LayerStack(lowers: [ReadOnlyLayer(file: TracingFile(inner, layerIndex: 0, recorder: recorder))])

        var table = Table("Trace recording: 4 KiB random reads of a stack over a \(size >> 20) MiB LZ4 ZFile layer, \(reads) reads per run (M reads/s)",
                          ["threads", "plain", "decorator idle", "recording", "recording / plain"])
        for threads in [1, 2] {
            let p = rate(plain, threads: threads, reads: reads, size: size)
            let i = rate(traced, threads: threads, reads: reads, size: size)
            var r = 0.0
            for _ in 0..<3 {
                recorder.begin()
                r = max(r, rate(traced, threads: threads, reads: reads, size: size, runs: 1))
                _ = recorder.finish()
            }
            table.add(["\(threads)", fmt(p / 1e6, 3), fmt(i / 1e6, 3), fmt(r / 1e6, 3), fmt(r / p)])
        }
        unlink(blob)
        return table.render()
    }

    /// Best of `runs`: reads per second over `threads` threads.
    static func rate(_ stack: LayerStack, threads: Int, reads: Int, size: UInt64, runs: Int = 3) -> Double {
        var bestSeconds = Double.infinity
        for _ in 0..<runs {
            let per = reads / threads
            let t0 = now()
            var handles: [JoinHandle] = []
            for t in 0..<threads {
                if let h = try? NamedThread.spawn(name: "bench-trace", {
                    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                    defer { b.deallocate() }
                    var g = FastRandom(UInt64(t + 11))
                    for _ in 0..<per { _ = try? stack.read(into: b, at: (g.next() % (size / 4096)) * 4096) }
                }) { handles.append(h) }
            }
            for h in handles { h.join() }
            bestSeconds = min(bestSeconds, now() - t0)
        }
        return Double(reads / threads * threads) / bestSeconds
    }
}
