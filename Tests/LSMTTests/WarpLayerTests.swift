import BlockIO
import LSMT
import Testing
import TestSupport
import ZFile

/// TurboOCI warp layers: the writable form (index + fsmeta, tag-1 mappings), the turbo
/// commit (byte layout checked field by field), the read-only open with a target, the
/// identity view in a stack, and hostile layers whose tag-1 ranges leave the target.
@Suite("LSMT warp (TurboOCI) layers")
struct WarpLayerTests {
    static let vsize: UInt64 = 64 << 20

    /// Little-endian u64 at `o` of `b`.
    static func u64(_ b: [UInt8], _ o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }

    /// An entry decoded by hand from its 16 bytes (formats/LSMT.md section 5).
    /// As "offset length moffset zeroed tag".
    static func entry(_ b: [UInt8], _ o: Int) -> String {
        let w0 = u64(b, o), w1 = u64(b, o + 8)
        return "\(w0 & ((1 << 50) - 1)) \(w0 >> 50) \(w1 & ((1 << 55) - 1)) \((w1 >> 55) & 1) \(w1 >> 56)"
    }

    static func target(_ size: Int) -> MemoryFile {
        var g = SplitMix64(seed: 99)
        return MemoryFile(bytes: (0..<size).map { _ in UInt8(truncatingIfNeeded: g.next()) }, name: "target", writable: false)
    }

    @Test("writable warp layer: files as overlaybd-create --turboOCI makes them; writes are LBA identity in fsmeta, mappings are tag 1 split at 16383 sectors; reopen keeps both")
    func writable() throws {
        let dir = TemporaryDirectory("obd-warp")
        defer { dir.remove() }
        let tgt = Self.target(12 << 20)
        let w = try WritableWarpLayer.create(indexPath: dir.file("index"), fsmetaPath: dir.file("fsmeta"), virtualSize: Self.vsize, target: tgt)
        var model = DiskModel(size: Int(Self.vsize))
        let data = [UInt8](repeating: 0xA5, count: 8192)
        try w.writeBytes(data, at: 4096)
        model.write(data, at: 4096)
        // 10 MiB mapped (more than 16383 sectors: two entries), then a write over part of it.
        try w.mapTarget(deviceOffset: 1 << 20, length: 10 << 20, targetOffset: 1536)
        model.write(try tgt.readBytes(at: 1536, count: 10 << 20), at: 1 << 20)
        try w.writeBytes([UInt8](repeating: 7, count: 4096), at: 2 << 20)
        model.write([UInt8](repeating: 7, count: 4096), at: 2 << 20)
        try w.discard(offset: 3 << 20, length: 8192)
        model.zero(3 << 20, 8192)
        try w.flush()
        #expect(try readAll(w) == model.bytes)

        // On disk: the index header (0x01, index_offset 4096, the virtual size), the
        // entries in order, and a headerless fsmeta of exactly the virtual size.
        let idx = try LocalFile(path: dir.file("index"))
        let raw = try idx.readBytes(at: 0, count: Int(idx.size))
        #expect(Array(raw[0..<8]) == LSMTHeader.magic0)
        #expect(Self.u64(raw, 28) & 0xFFFF_FFFF == 0x01 && Self.u64(raw, 32) == 4096 && Self.u64(raw, 48) == Self.vsize)
        let entries = (0..<((raw.count - 4096) / 16)).map { Self.entry(raw, 4096 + 16 * $0) }
        #expect(entries.count == 1 + 2 + 1 + 1)
        #expect(entries[0] == "8 16 8 0 0")
        #expect(entries[1] == "2048 16383 3 0 1")
        #expect(entries[2] == "18431 4097 16386 0 1")
        #expect(entries[3] == "4096 8 4096 0 0")
        #expect(entries[4] == "6144 16 6144 1 0")
        let fsmeta = try LocalFile(path: dir.file("fsmeta"))
        #expect(fsmeta.size == Self.vsize)
        #expect(try fsmeta.readBytes(at: 4096, count: 8192) == data)

        let again = try WritableWarpLayer.open(indexPath: dir.file("index"), fsmetaPath: dir.file("fsmeta"), target: tgt)
        #expect(again.segments == w.segments)
        #expect(try readAll(again) == model.bytes)
        // Without a target, a tag-1 range cannot be read; the rest can.
        let blind = try WritableWarpLayer.open(indexPath: dir.file("index"), fsmetaPath: dir.file("fsmeta"), writable: false)
        #expect(try blind.readBytes(at: 4096, count: 8192) == data)
        #expect(throws: LSMTError.self) { _ = try blind.readBytes(at: 1 << 20, count: 4096) }
        // Mappings outside the target or misaligned are refused.
        #expect(throws: LSMTError.self) { try again.mapTarget(deviceOffset: 0, length: 4096, targetOffset: UInt64(tgt.size) - 512) }
        #expect(throws: LSMTError.self) { try again.mapTarget(deviceOffset: 0, length: 4096, targetOffset: 100) }
    }

    @Test("turbo commit: header 0x07, fsmeta extents compacted, tag-1 entries verbatim, fold pass, index not padded, trailer 0x06, uuid and parent only from the arguments; the read-only warp layer reads what the writable one did", arguments: [false, true])
    func commit(zfile: Bool) throws {
        let dir = TemporaryDirectory("obd-warp-commit")
        defer { dir.remove() }
        let tgt = Self.target(1 << 20)
        let parent = LayerUUID("11111111-2222-3333-4444-555555555555")!
        let w = try WritableWarpLayer.create(indexPath: dir.file("index"), fsmetaPath: dir.file("fsmeta"), virtualSize: Self.vsize,
                                             parentUUID: parent, target: tgt)
        try w.writeBytes([UInt8](repeating: 1, count: 8192), at: 0)
        try w.mapTarget(deviceOffset: 65536, length: 65536, targetOffset: 5120)
        try w.mapTarget(deviceOffset: 131072, length: 4096, targetOffset: 5120 + 65536)   // continues: folded
        try w.writeBytes([UInt8](repeating: 2, count: 4096), at: 8192)                      // continues the first write
        let out = MemoryFile(name: "fs.meta")
        let n: Int
        if zfile {
            let z = try ZFileWriter(output: out, options: ZFileOptions(algorithm: .lz4, blockSize: 4096, verify: true, threads: 1, overwriteHeader: true))
            n = try w.commit(args: CommitArgs(), into: z)
        } else {
            n = try w.commit(args: CommitArgs(), into: FileAppendSink(file: out))
        }
        let plain: any BlockFile = zfile ? try ZFileReader(source: out) : out
        let b = try readAll(plain)
        #expect(n == 2)
        // Header: flags 0x07, index fields 0, null uuid and parent (the writable layer's parent is not used).
        #expect(Self.u64(b, 28) & 0xFFFF_FFFF == 0x07 && Self.u64(b, 32) == 0 && Self.u64(b, 40) == 0 && Self.u64(b, 48) == Self.vsize)
        #expect(String(decoding: b[56..<92], as: UTF8.self) == LayerUUID.null.description)
        #expect(String(decoding: b[93..<129], as: UTF8.self) == LayerUUID.null.description)
        // Data: 12 KiB of fsmeta at 4096; index right after it, 2 entries, no padding; trailer.
        let indexOffset = 4096 + 12288
        #expect(b.count == indexOffset + 2 * 16 + 4096)
        #expect(Array(b[4096..<12288]) == [UInt8](repeating: 1, count: 8192))
        #expect(Self.entry(b, indexOffset) == "0 24 8 0 0")
        #expect(Self.entry(b, indexOffset + 16) == "128 136 10 0 1")
        let t = b.count - 4096
        #expect(Self.u64(b, t + 28) & 0xFFFF_FFFF == 0x06 && Self.u64(b, t + 32) == UInt64(indexOffset) && Self.u64(b, t + 40) == 2)
        // uuid/parent from the arguments.
        let id = LayerUUID("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE")!
        let out2 = MemoryFile(name: "fs.meta2")
        try w.commit(args: CommitArgs(uuid: id, parentUUID: parent), into: FileAppendSink(file: out2))
        let h2 = try LSMTHeader.read(from: out2, at: 0)
        #expect(h2.uuid == id && h2.parentUUID == parent)

        let ro = try WarpLayer(file: plain, target: tgt)
        #expect(ro.index.segments.map(\.tag) == [0, 1])
        #expect(try readAll(ro) == readAll(w))
        // A native open of a warp layer does not pass for a normal layer here: its tag-1
        // entry points past the layer's data area.
        #expect(throws: LSMTError.self) { _ = try ReadOnlyLayer(file: plain) }
    }

    @Test("in a stack a warp layer is an identity mapping: its ranges come from fsmeta or the target, gaps from the layers below")
    func stacked() throws {
        let dir = TemporaryDirectory("obd-warp-stack")
        defer { dir.remove() }
        let size = Int(Self.vsize)
        let lowerW = try WritableLayer.create(dataPath: dir.file("d"), indexPath: dir.file("i"), virtualSize: Self.vsize)
        var model = DiskModel(size: size)
        var g = SplitMix64(seed: 5)
        for k in 0..<32 {
            let bytes = (0..<65536).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            try bytes.withUnsafeBytes { try lowerW.write($0, at: UInt64(k) << 20) }
            model.write(bytes, at: k << 20)
        }
        let lower = try ReadOnlyLayer(file: commitToMemory(lowerW))
        let tgt = Self.target(4 << 20)
        let w = try WritableWarpLayer.create(indexPath: dir.file("wi"), fsmetaPath: dir.file("wf"), virtualSize: Self.vsize,
                                             target: tgt, base: try LayerStack(lowers: [lower]))
        try w.mapTarget(deviceOffset: 3 << 20, length: 3 << 20, targetOffset: 512)
        model.write(try tgt.readBytes(at: 512, count: 3 << 20), at: 3 << 20)
        try w.writeBytes([UInt8](repeating: 9, count: 4096), at: (10 << 20) + 4096)
        model.write([UInt8](repeating: 9, count: 4096), at: (10 << 20) + 4096)
        try w.discard(offset: 20 << 20, length: 4096)
        model.zero(20 << 20, 4096)
        // The writable warp layer over its base shows the whole disk.
        #expect(try readAll(w) == model.bytes)
        let out = MemoryFile(name: "fs.meta")
        try w.commit(args: CommitArgs(), into: FileAppendSink(file: out))
        let warp = try WarpLayer(file: out, target: tgt)
        let stack = try LayerStack(lowers: [lower, ReadOnlyLayer(warp: warp)])
        #expect(stack.size == Self.vsize)
        #expect(try readAll(stack) == model.bytes)
        // Unaligned reads across a boundary of mapped and unmapped ranges.
        for (off, len) in [((3 << 20) - 700, 2000), ((6 << 20) - 100, 300), ((10 << 20) + 4000, 5000)] {
            #expect(try stack.readBytes(at: UInt64(off), count: len) == Array(model.bytes[off..<(off + len)]))
        }
    }

    @Test("many small mappings laid out as a tar lays out files (ascending, small holes in the target, gaps on the disk): random reads equal the model", arguments: 0..<3)
    func tarLikeRuns(seed: Int) throws {
        let dir = TemporaryDirectory("obd-warp-runs")
        defer { dir.remove() }
        var g = SplitMix64(seed: UInt64(seed) + 40)
        let size = 16 << 20
        let tgt = Self.target(12 << 20)
        let w = try WritableWarpLayer.create(indexPath: dir.file("i"), fsmetaPath: dir.file("f"), virtualSize: UInt64(size), target: tgt)
        var model = DiskModel(size: size)
        var dev = 4096, t = 512
        while true {
            let len = Int(g.next() % 40 + 1) * 512
            guard dev + len <= size, t + len <= Int(tgt.size) else { break }
            try w.mapTarget(deviceOffset: UInt64(dev), length: UInt64(len), targetOffset: UInt64(t))
            model.write(try tgt.readBytes(at: UInt64(t), count: len), at: dev)
            dev += (len + 4095) / 4096 * 4096 + (g.next() % 4 == 0 ? 4096 : 0)
            t += len + 512 * Int(g.next() % 3 + 1) + (g.next() % 50 == 0 ? 128 << 10 : 0)
        }
        try w.writeBytes([UInt8](repeating: 5, count: 4096), at: 1 << 20)
        model.write([UInt8](repeating: 5, count: 4096), at: 1 << 20)
        let out = MemoryFile(name: "runs")
        try w.commit(args: CommitArgs(), into: FileAppendSink(file: out))
        let ro = try WarpLayer(file: out, target: tgt)
        #expect(ro.index.count > 100)
        #expect(try readAll(ro) == model.bytes)
        for _ in 0..<300 {
            let off = Int(g.next() % UInt64(size - 1))
            let len = Int(g.next() % UInt64(min(size - off, 3 << 20))) + 1
            #expect(try ro.readBytes(at: UInt64(off), count: len) == Array(model.bytes[off..<(off + len)]))
        }
    }

    /// A committed warp layer, its bytes editable: 8 KiB of fsmeta and one 64 KiB mapping at target byte 4096.
    static func committed(_ dir: TemporaryDirectory, target: any BlockFile) throws -> [UInt8] {
        let w = try WritableWarpLayer.create(indexPath: dir.file("hi-\(UInt32.random(in: 0...UInt32.max))"),
                                             fsmetaPath: dir.file("hf-\(UInt32.random(in: 0...UInt32.max))"), virtualSize: Self.vsize)
        try w.writeBytes([UInt8](repeating: 3, count: 8192), at: 0)
        try w.mapTarget(deviceOffset: 1 << 20, length: 65536, targetOffset: 4096)
        let out = MemoryFile(name: "w")
        try w.commit(args: CommitArgs(), into: FileAppendSink(file: out))
        return try readAll(out)
    }

    static func expectCorrupt(_ bytes: [UInt8], target: any BlockFile, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try WarpLayer(file: MemoryFile(bytes: bytes, name: "hostile", writable: false), target: target)
            Issue.record("opened", sourceLocation: sourceLocation)
        } catch let LSMTError.corrupt(name, detail) {
            #expect(name == "hostile" && detail.contains(text), "\(detail)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test("hostile warp layers: tag-1 ranges past the target, a target that shrinks, unknown tags, overlaps, tag-0 data outside the file: typed errors, never wrong bytes")
    func hostile() throws {
        let dir = TemporaryDirectory("obd-warp-hostile")
        defer { dir.remove() }
        let tgt = Self.target(1 << 20)
        let good = try Self.committed(dir, target: tgt)
        let ro = try WarpLayer(file: MemoryFile(bytes: good, name: "good", writable: false), target: tgt)
        #expect(try ro.readBytes(at: 1 << 20, count: 65536) == tgt.readBytes(at: 4096, count: 65536))
        let indexOffset = 4096 + 8192
        func edit(_ entry: Int, _ body: (inout Segment) -> Void) -> [UInt8] {
            var b = good
            var s = b.withUnsafeBytes { Segment.load(from: $0, at: indexOffset + 16 * entry) }
            body(&s)
            b.replaceSubrange((indexOffset + 16 * entry)..<(indexOffset + 16 * entry + 16), with: Segment.encode([s][...]))
            return b
        }
        // The tag-1 entry moved past the end of the target, or made to run over it.
        Self.expectCorrupt(edit(1) { $0.moffset = 2048 }, target: tgt, "leaves the target")
        Self.expectCorrupt(edit(1) { $0.moffset = 2048 - 64 }, target: tgt, "leaves the target")
        Self.expectCorrupt(good, target: Self.target(65536), "leaves the target")
        Self.expectCorrupt(edit(1) { $0.tag = 2 }, target: tgt, "has tag 2")
        Self.expectCorrupt(edit(0) { $0.moffset = 4 }, target: tgt, "outside the data area")
        Self.expectCorrupt(edit(1) { $0.offset = 8 }, target: tgt, "overlaps")
        Self.expectCorrupt(edit(1) { $0.length = 0 }, target: tgt, "length 0")
        // Both tags raised by one: the smallest tag is subtracted, the layer reads as before.
        let shifted = edit(0) { $0.tag = 1 }
        let both = { () -> [UInt8] in
            var b = shifted
            var s = b.withUnsafeBytes { Segment.load(from: $0, at: indexOffset + 16) }
            s.tag = 2
            b.replaceSubrange((indexOffset + 16)..<(indexOffset + 32), with: Segment.encode([s][...]))
            return b
        }()
        let moved = try WarpLayer(file: MemoryFile(bytes: both, name: "shifted", writable: false), target: tgt)
        #expect(try readAll(moved) == readAll(ro))
        // A target that is shorter at read time than at open: the read fails.
        final class Shrinking: BlockFile, @unchecked Sendable {
            let inner: any BlockFile
            var cut: UInt64?
            init(_ inner: any BlockFile) { self.inner = inner }
            var size: UInt64 { cut ?? inner.size }
            var name: String { "shrinking" }
            func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
                let end = cut ?? inner.size
                guard offset < end else { return 0 }
                return try inner.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(UInt64(buffer.count), end - offset))]), at: offset)
            }
        }
        let shrinking = Shrinking(tgt)
        let late = try WarpLayer(file: MemoryFile(bytes: good, name: "late", writable: false), target: shrinking)
        shrinking.cut = 8192
        #expect(throws: LSMTError.self) { _ = try late.readBytes(at: 1 << 20, count: 65536) }
        // The writable form: an index entry with tag 3, or a tag-1 entry past the target.
        let w = try WritableWarpLayer.create(indexPath: dir.file("wi"), fsmetaPath: dir.file("wf"), virtualSize: Self.vsize)
        try w.mapTarget(deviceOffset: 0, length: 65536, targetOffset: 1 << 20)
        try w.flush()
        #expect(throws: LSMTError.self) { _ = try WritableWarpLayer.open(indexPath: dir.file("wi"), fsmetaPath: dir.file("wf"), target: tgt) }
        let idx = try LocalFile(path: dir.file("wi"), mode: .readWrite)
        try idx.writeBytes(Segment.encode([Segment(offset: 0, length: 8, moffset: 0, tag: 3)][...]), at: 4096)
        #expect(throws: LSMTError.self) { _ = try WritableWarpLayer.open(indexPath: dir.file("wi"), fsmetaPath: dir.file("wf")) }
    }
}
