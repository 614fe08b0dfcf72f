import BlockIO
import LSMT
import Testing
import TestSupport
import ZFile

/// A simple model of a virtual disk: bytes plus which sectors the top layer maps.
struct DiskModel {
    var bytes: [UInt8]
    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }
    mutating func write(_ data: [UInt8], at off: Int) { bytes.replaceSubrange(off..<(off + data.count), with: data) }
    mutating func zero(_ off: Int, _ len: Int) { write([UInt8](repeating: 0, count: len), at: off) }
}

func readAll(_ f: any BlockFile) throws -> [UInt8] {
    try f.readBytes(at: 0, count: Int(f.size))
}

/// Commits a writable layer to a plain (or ZFile) read-only layer in memory.
func commitToMemory(_ layer: WritableLayer, zfile: ZFileOptions? = nil, args: CommitArgs = CommitArgs()) throws -> any BlockFile {
    let out = MemoryFile(name: "commit")
    let segs = layer.segments.map { var s = $0; s.tag = 0; return s }
    if let zfile {
        let w = try ZFileWriter(output: out, options: zfile)
        try LayerCommit.write(segments: segs, sources: [layer.dataFile], virtualSize: layer.virtualSize,
                              defaultParent: layer.header.parentUUID, args: args, into: w)
        return try ZFileReader(source: out)
    }
    try LayerCommit.write(segments: segs, sources: [layer.dataFile], virtualSize: layer.virtualSize,
                          defaultParent: layer.header.parentUUID, args: args, into: FileAppendSink(file: out))
    return out
}

@Suite("LSMT layers and stacks")
struct LayerTests {
    static let size = 4 << 20

    @Test("random writes, discards, reopen, commit and merge match an in-memory model", arguments: [false, true], 0..<4)
    func property(sparse: Bool, seed: Int) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var g = SplitMix64(seed: UInt64(seed) * 31 + (sparse ? 7 : 0))
        var model = DiskModel(size: Self.size)
        var lowers: [ReadOnlyLayer] = []
        for round in 0..<3 {
            let data = dir.file("d\(round)"), index = dir.file("i\(round)")
            var layer = try WritableLayer.create(dataPath: data, indexPath: index, virtualSize: UInt64(Self.size), sparse: sparse)
            var stack = try LayerStack(lowers: lowers, upper: layer)
            // Sparse layers allocate whole filesystem blocks: keep their I/O 4 KiB-aligned so
            // the model need not know the block size (see formats/LSMT.md on sparse mode).
            let unit = sparse ? 8 : 1
            let lowerModel = model
            for step in 0..<120 {
                let sectors = (Int(g.next() % 64) / unit + 1) * unit
                let off = Int(g.next() % UInt64((Self.size / 512 - sectors) / unit)) * unit * 512
                let len = sectors * 512
                switch g.next() % 10 {
                case 0:
                    try stack.discard(offset: UInt64(off), length: UInt64(len))
                    model.zero(off, len)
                    if sparse {
                        // Sparse discards are holes: after a reopen they show the lowers again.
                        try layer.flush()
                        layer = try WritableLayer.open(dataPath: data, indexPath: index)
                        stack = try LayerStack(lowers: lowers, upper: layer)
                        model.write(Array(lowerModel.bytes[off..<(off + len)]), at: off)
                    }
                case 1 where step % 20 == 0:
                    try layer.flush()
                    layer = try WritableLayer.open(dataPath: data, indexPath: index)
                    stack = try LayerStack(lowers: lowers, upper: layer)
                default:
                    let bytes = g.bytes(len)
                    try bytes.withUnsafeBytes { try stack.write($0, at: UInt64(off)) }
                    model.write(bytes, at: off)
                }
                if step % 15 == 0 {
                    let o = Int(g.next() % UInt64(Self.size - 70_000))
                    let n = Int(g.next() % 70_000) + 1
                    #expect(try stack.readBytes(at: UInt64(o), count: n)[...] == model.bytes[o..<(o + n)])
                }
            }
            #expect(try readAll(stack) == model.bytes)
            // Commit the upper (alternately plain and ZFile) and push it as a new lower.
            try layer.flush()
            let committed = try commitToMemory(layer, zfile: round % 2 == 1 ? ZFileOptions(algorithm: .zstd) : nil)
            lowers.append(try ReadOnlyLayer(file: committed))
            #expect(try readAll(LayerStack(lowers: lowers)) == model.bytes)
        }
        // Merge (flatten) all lowers into one layer.
        let flat = try LayerStack(lowers: lowers)
        let out = MemoryFile()
        try LayerCommit.write(segments: flat.flattenedIndex(), sources: flat.flattenedFiles, virtualSize: UInt64(Self.size),
                              defaultParent: .null, args: CommitArgs(), into: FileAppendSink(file: out))
        #expect(try readAll(LayerStack(lowers: [ReadOnlyLayer(file: out)])) == model.bytes)
    }

    @Test("sparse upper: a discarded range shows the lower layer again after reopen")
    func sparseDiscardReverts() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let base = try WritableLayer.create(dataPath: dir.file("bd"), indexPath: dir.file("bi"), virtualSize: 1 << 20)
        let fill = [UInt8](repeating: 0x5A, count: 1 << 20)
        try fill.withUnsafeBytes { try base.write($0, at: 0) }
        let lower = try ReadOnlyLayer(file: commitToMemory(base))
        let up = try WritableLayer.create(dataPath: dir.file("ud"), indexPath: dir.file("ui"), virtualSize: 1 << 20, sparse: true)
        let stack = try LayerStack(lowers: [lower], upper: up)
        try [UInt8](repeating: 1, count: 65536).withUnsafeBytes { try stack.write($0, at: 0) }
        try stack.discard(offset: 0, length: 65536)
        #expect(try stack.readBytes(at: 0, count: 65536) == [UInt8](repeating: 0, count: 65536))
        try stack.flush()
        let reopened = try LayerStack(lowers: [lower], upper: WritableLayer.open(dataPath: dir.file("ud"), indexPath: dir.file("ui")))
        #expect(try reopened.readBytes(at: 0, count: 65536) == [UInt8](repeating: 0x5A, count: 65536))
    }

    @Test("append-only discards persist as zeroed extents over the lower")
    func appendDiscardPersists() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let base = try WritableLayer.create(dataPath: dir.file("bd"), indexPath: dir.file("bi"), virtualSize: 1 << 20)
        try [UInt8](repeating: 0x5A, count: 1 << 20).withUnsafeBytes { try base.write($0, at: 0) }
        let lower = try ReadOnlyLayer(file: commitToMemory(base))
        let up = try WritableLayer.create(dataPath: dir.file("ud"), indexPath: dir.file("ui"), virtualSize: 0)
        let stack = try LayerStack(lowers: [lower], upper: up)
        #expect(up.virtualSize == 1 << 20)
        try stack.discard(offset: 4096, length: 8192)
        try stack.flush()
        let again = try LayerStack(lowers: [lower], upper: WritableLayer.open(dataPath: dir.file("ud"), indexPath: dir.file("ui")))
        #expect(try again.readBytes(at: 4096, count: 8192) == [UInt8](repeating: 0, count: 8192))
        #expect(try again.readBytes(at: 0, count: 4096) == [UInt8](repeating: 0x5A, count: 4096))
        // The committed upper keeps the zeroed extent.
        let c = try ReadOnlyLayer(file: commitToMemory(again.upper!))
        #expect(c.segments.count == 1 && c.segments[0].zeroed)
    }

    @Test("unaligned writes are refused; read-only stacks refuse writes; writes past the end are refused")
    func refusals() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let up = try WritableLayer.create(dataPath: dir.file("d"), indexPath: dir.file("i"), virtualSize: 1 << 20)
        let stack = try LayerStack(lowers: [], upper: up)
        #expect(throws: LSMTError.self) { try [UInt8](repeating: 1, count: 100).withUnsafeBytes { try stack.write($0, at: 0) } }
        #expect(throws: LSMTError.self) { try [UInt8](repeating: 1, count: 512).withUnsafeBytes { try stack.write($0, at: 3) } }
        #expect(throws: BlockIOError.self) { try [UInt8](repeating: 1, count: 512).withUnsafeBytes { try stack.write($0, at: 1 << 20) } }
        let ro = try LayerStack(lowers: [ReadOnlyLayer(file: commitToMemory(up))])
        #expect(throws: BlockIOError.self) { try [UInt8](repeating: 1, count: 512).withUnsafeBytes { try ro.write($0, at: 0) } }
    }

    @Test("seal in place, open as read-only, compact; large writes split at 4 MiB")
    func seal() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let up = try WritableLayer.create(dataPath: dir.file("d"), indexPath: dir.file("i"), virtualSize: 64 << 20,
                                          parentUUID: LayerUUID("11111111-2222-3333-4444-555555555501")!)
        var g = SplitMix64(seed: 1)
        let big = g.bytes(9 << 20)
        try big.withUnsafeBytes { try up.write($0, at: 1 << 20) }
        #expect(up.segments.count == 3)
        try up.seal()
        #expect(throws: LSMTError.self) { try WritableLayer.open(dataPath: dir.file("d"), indexPath: dir.file("i")) }
        let sealed = try ReadOnlyLayer(file: LocalFile(path: dir.file("d")))
        #expect(sealed.trailer.flags.rawValue == 0x06)
        let disk = LayerStack(lowersUnchecked: [sealed])
        #expect(try disk.readBytes(at: 1 << 20, count: big.count) == big)
        let out = MemoryFile()
        try LayerCommit.write(segments: sealed.segments, sources: [sealed.file], virtualSize: sealed.header.virtualSize,
                              defaultParent: sealed.header.parentUUID, args: CommitArgs(message: Array("hello".utf8)),
                              into: FileAppendSink(file: out))
        let c = try ReadOnlyLayer(file: out)
        #expect(c.header.message == "hello")
        #expect(c.header.parentUUID.description == "11111111-2222-3333-4444-555555555501")
        #expect(c.header.uuid == .null)
        // 9 MiB of contiguous data: 16320-sector extents and a remainder.
        #expect(c.segments.map(\.length) == [16320, 2112])
        #expect(try LayerStack(lowers: [c]).readBytes(at: 1 << 20, count: big.count) == big)
    }

    @Test("a commit message over 256 bytes is refused")
    func longMessage() throws {
        #expect(throws: LSMTError.self) {
            try LayerCommit.write(segments: [], sources: [], virtualSize: 0, defaultParent: .null,
                                  args: CommitArgs(message: [UInt8](repeating: 65, count: 257)), into: FileAppendSink(file: MemoryFile()))
        }
    }
}

extension LayerStack {
    convenience init(lowersUnchecked: [ReadOnlyLayer]) {
        try! self.init(lowers: lowersUnchecked)
    }
}

@Suite("Stack limits")
struct StackLimitTests {
    @Test("255 layers stack (each wins where it wrote); 256 are refused")
    func layerLimit() throws {
        var layers: [ReadOnlyLayer] = []
        for i in 0..<256 {
            let segs = [Segment(offset: UInt64(i) * 8, length: 16, moffset: 8)]
            var h = LSMTHeader(flags: [.isHeader, .isDataFile, .sealed], virtualSize: 1 << 20)
            var bytes = h.serialize() + [UInt8](repeating: UInt8(i), count: 16 * 512)
            h.flags = [.isDataFile, .sealed]
            h.indexOffset = UInt64(bytes.count)
            h.indexSize = 256
            bytes += Segment.encode((segs + [Segment](repeating: .invalid, count: 255))[...]) + h.serialize()
            layers.append(try ReadOnlyLayer(file: MemoryFile(bytes: bytes, writable: false)))
        }
        let stack = try LayerStack(lowers: Array(layers[0..<255]))
        // Sector 8k..8k+7 was written last by layer k (layer k+1 starts 8 sectors higher).
        for k in [0, 1, 100, 254] {
            #expect(try stack.readBytes(at: UInt64(k) * 4096, count: 4096) == [UInt8](repeating: UInt8(k), count: 4096))
        }
        #expect(throws: LSMTError.self) { try LayerStack(lowers: layers) }
    }
}
