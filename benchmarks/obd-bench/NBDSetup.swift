import BlockIO
import Glibc
import LSMT
import ZFile

/// Builds the images the NBD benchmark serves: a 3-layer stack written from the
/// system-file corpus (layer 1 fills the disk, layer 2 rewrites 30% in 64 KiB
/// extents, layer 3 rewrites 10% in 4 KiB blocks), committed both plain and as LZ4
/// ZFiles, plus the same disk as one flat raw file for the peer server.
enum NBDSetup {
    static func run(dir: String, diskMiB: Int, corpus: LocalFile) throws {
        let size = UInt64(diskMiB) << 20
        var rng = FastRandom(11)
        var plain: [ReadOnlyLayer] = []
        let plans: [(chunk: Int, fraction: Double)] = [(1 << 20, 1.0), (64 << 10, 0.3), (4 << 10, 0.1)]
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        for (i, plan) in plans.enumerated() {
            let d = "\(dir)/l\(i).data", x = "\(dir)/l\(i).index"
            unlink(d); unlink(x)
            let w = try WritableLayer.create(dataPath: d, indexPath: x, virtualSize: size)
            let count = plan.fraction >= 1 ? Int(size) / plan.chunk : Int(Double(size) * plan.fraction) / plan.chunk
            for k in 0..<count {
                let src = (rng.next() % (corpus.size / UInt64(plan.chunk) - 1)) * UInt64(plan.chunk)
                _ = try buf.withUnsafeMutableBytes { try corpus.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<plan.chunk]), at: src) }
                let off = plan.fraction >= 1 ? UInt64(k * plan.chunk) : (rng.next() % (size / UInt64(plan.chunk))) * UInt64(plan.chunk)
                try buf.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[0..<plan.chunk]), at: off) }
            }
            let segs = w.segments.map { var s = $0; s.tag = 0; return s }
            for (suffix, z) in [("commit", false), ("lz4.zfile", true)] {
                let path = "\(dir)/l\(i).\(suffix)"
                unlink(path)
                let out = try LocalFile(path: path, mode: .createExclusive)
                let sink: any AppendSink = z ? try ZFileWriter(output: out, options: ZFileOptions(threads: 2)) : FileAppendSink(file: out)
                try LayerCommit.write(segments: segs, sources: [w.dataFile], virtualSize: size, defaultParent: .null,
                                      args: CommitArgs(), into: sink)
            }
            plain.append(try ReadOnlyLayer(file: LocalFile(path: "\(dir)/l\(i).commit")))
            unlink(d); unlink(x)
        }
        let stack = try LayerStack(lowers: plain)
        let flatPath = "\(dir)/flat.raw"
        unlink(flatPath)
        let flat = try LocalFile(path: flatPath, mode: .createExclusive)
        var off: UInt64 = 0
        while off < size {
            let n = try buf.withUnsafeMutableBytes { try stack.read(into: $0, at: off) }
            try buf.withUnsafeBytes { try flat.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: off) }
            off += UInt64(n)
        }
        for (name, suffix) in [("stack-raw", "commit"), ("stack-lz4", "lz4.zfile")] {
            let json = "{\"lowers\":[" + (0..<3).map { "{\"file\":\"l\($0).\(suffix)\"}" }.joined(separator: ",") + "]}\n"
            let f = try LocalFile(path: "\(dir)/\(name).json", mode: .createTruncate)
            try f.writeBytes(Array(json.utf8), at: 0)
        }
        print("nbd-setup: \(diskMiB) MiB disk, \(stack.index.count) merged segments, in \(dir)")
    }
}
