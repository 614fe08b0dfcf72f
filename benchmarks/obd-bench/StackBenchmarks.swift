import BlockIO
import Glibc
import LSMT

/// A 3-layer stack of uncompressed local layers vs pread of the same disk as one flat file.
enum StackBenchmarks {
    static func run(work: String, diskMiB: Int, randomReads: Int) throws -> String {
        let size = UInt64(diskMiB) << 20
        var rng = FastRandom(3)
        var lowers: [ReadOnlyLayer] = []
        // Layer 1 fills the disk; layer 2 rewrites random 64 KiB extents (~30%);
        // layer 3 rewrites random 4 KiB blocks (~10%).
        let plans: [(chunk: Int, fraction: Double)] = [(1 << 20, 1.0), (64 << 10, 0.3), (4 << 10, 0.1)]
        for (i, plan) in plans.enumerated() {
            let d = "\(work)/l\(i).data", x = "\(work)/l\(i).index"
            unlink(d); unlink(x)
            let w = try WritableLayer.create(dataPath: d, indexPath: x, virtualSize: size)
            var buf = [UInt8](repeating: 0, count: plan.chunk)
            let count = plan.fraction >= 1 ? Int(size) / plan.chunk : Int(Double(size) * plan.fraction) / plan.chunk
            for k in 0..<count {
                for j in stride(from: 0, to: buf.count, by: 8) { buf.withUnsafeMutableBytes { $0.storeBytes(of: rng.next(), toByteOffset: j, as: UInt64.self) } }
                let off = plan.fraction >= 1 ? UInt64(k * plan.chunk) : (rng.next() % (size / UInt64(plan.chunk))) * UInt64(plan.chunk)
                try buf.withUnsafeBytes { try w.write($0, at: off) }
            }
            let out = try LocalFile(path: "\(work)/l\(i).commit", mode: .createTruncate)
            try LayerCommit.write(segments: w.segments.map { var s = $0; s.tag = 0; return s }, sources: [w.dataFile],
                                  virtualSize: size, defaultParent: .null, args: CommitArgs(), into: FileAppendSink(file: out))
            lowers.append(try ReadOnlyLayer(file: LocalFile(path: "\(work)/l\(i).commit")))
        }
        let stack = try LayerStack(lowers: lowers)
        // The flat raw image.
        let flatPath = "\(work)/flat.raw"
        let flat = try LocalFile(path: flatPath, mode: .createTruncate)
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { big.deallocate() }
        var off: UInt64 = 0
        while off < size {
            let n = try stack.read(into: big, at: off)
            try flat.write(UnsafeRawBufferPointer(rebasing: big[0..<n]), at: off)
            off += UInt64(n)
        }
        let raw = try LocalFile(path: flatPath, map: false)  // the anchor is plain pread
        var table = Table("3-layer stack read vs pread of the flat raw image (\(diskMiB) MiB disk, \(stack.index.count) merged segments; GB/s)",
                          ["access", "obd LayerStack", "flat file pread", "ratio", "goal"])
        let seqStack = try best { var o: UInt64 = 0; while o < size { o += UInt64(try stack.read(into: big, at: o)) } }
        let seqRaw = try best { var o: UInt64 = 0; while o < size { o += UInt64(try raw.read(into: big, at: o)) } }
        table.add(["sequential 1 MiB", gbps(Double(size), seqStack), gbps(Double(size), seqRaw), fmt(seqRaw / seqStack), ">= 0.80"])
        let picks = (0..<randomReads).map { _ in (rng.next() % (size / 4096)) * 4096 }
        let one = UnsafeMutableRawBufferPointer(rebasing: big[0..<4096])
        let rStack = try best { for p in picks { _ = try stack.read(into: one, at: p) } }
        let rRaw = try best { for p in picks { _ = try raw.read(into: one, at: p) } }
        let bytes = Double(randomReads * 4096)
        table.add(["random 4 KiB", gbps(bytes, rStack), gbps(bytes, rRaw), fmt(rRaw / rStack), ">= 0.80"])
        return table.render()
    }
}
