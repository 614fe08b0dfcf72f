import BlockIO
import LSMT
import Testing
import TestSupport

/// Builds a read-only layer file from raw parts, so tests can break any field.
func layerBytes(segments: [Segment], dataSectors: Int, padTo: Int = 256, vsize: UInt64 = 1 << 30,
                trailerFlags: UInt32 = 0x06, indexSizeOverride: UInt64? = nil) -> [UInt8] {
    var h = LSMTHeader(flags: [.isHeader, .isDataFile, .sealed], virtualSize: vsize)
    var out = h.serialize()
    out += [UInt8](repeating: 0xCD, count: dataSectors * 512)
    let indexOffset = UInt64(out.count)
    var segs = segments
    while segs.count % padTo != 0 { segs.append(.invalid) }
    out += Segment.encode(segs[...])
    h.flags = LSMTHeader.Flags(rawValue: trailerFlags)
    h.indexOffset = indexOffset
    h.indexSize = indexSizeOverride ?? UInt64(segs.count)
    out += h.serialize()
    return out
}

@Suite("LSMT with bad input")
struct LSMTHostileTests {
    func open(_ b: [UInt8]) throws -> ReadOnlyLayer {
        try ReadOnlyLayer(file: MemoryFile(bytes: b, writable: false))
    }

    @Test("a well-formed hand-made layer opens")
    func good() throws {
        let l = try open(layerBytes(segments: [Segment(offset: 0, length: 8, moffset: 8), Segment(offset: 8, length: 8, moffset: 16)], dataSectors: 16))
        #expect(l.segments.count == 2)
    }

    @Test("overlapping, unordered, out-of-range and empty entries are refused",
          arguments: [
            [Segment(offset: 0, length: 8, moffset: 8), Segment(offset: 4, length: 8, moffset: 16)],
            [Segment(offset: 16, length: 8, moffset: 8), Segment(offset: 0, length: 8, moffset: 16)],
            [Segment(offset: 0, length: 8, moffset: 4)],
            [Segment(offset: 0, length: 8, moffset: 20)],
            [Segment(offset: 0, length: 8, moffset: 1 << 40)],
            [Segment(offset: 0, length: 0, moffset: 8)],
            [Segment(offset: 0, length: 8, moffset: 40, zeroed: true)],
          ])
    func badEntries(segments: [Segment]) {
        #expect(throws: LSMTError.self) { try open(layerBytes(segments: segments, dataSectors: 16)) }
    }

    @Test("absurd index sizes and offsets are refused")
    func absurdCounts() {
        #expect(throws: LSMTError.self) { try open(layerBytes(segments: [], dataSectors: 1, indexSizeOverride: 1 << 40)) }
        #expect(throws: LSMTError.self) { try open(layerBytes(segments: [], dataSectors: 1, indexSizeOverride: 1_000_001)) }
        #expect(throws: LSMTError.self) { try open(layerBytes(segments: [], dataSectors: 1, indexSizeOverride: 257)) }
        var b = layerBytes(segments: [], dataSectors: 1)
        let t = b.count - 4096
        b.replaceSubrange((t + 32)..<(t + 40), with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
        #expect(throws: LSMTError.self) { try open(b) }
    }

    @Test("bad magic, wrong flags and truncation are refused")
    func badRecords() throws {
        let good = layerBytes(segments: [Segment(offset: 0, length: 8, moffset: 8)], dataSectors: 8)
        var b = good; b[0] ^= 1
        #expect(throws: LSMTError.self) { try open(b) }
        #expect(throws: LSMTError.self) { try open(layerBytes(segments: [], dataSectors: 1, trailerFlags: 0x02)) }
        #expect(throws: LSMTError.self) { try open(layerBytes(segments: [], dataSectors: 1, trailerFlags: 0x07)) }
        for cut in stride(from: 0, to: good.count, by: 511) {
            #expect(throws: LSMTError.self) { try open(Array(good[0..<cut])) }
        }
    }

    @Test("random corruption never crashes", arguments: 0..<4)
    func randomCorruption(seed: Int) {
        var g = SplitMix64(seed: UInt64(seed))
        let segs = (0..<40).map { Segment(offset: UInt64($0) * 16, length: 8, moffset: 8 + UInt64($0) * 8) }
        let good = layerBytes(segments: segs, dataSectors: 320)
        for _ in 0..<500 {
            var b = good
            for _ in 0..<Int(g.next() % 4 + 1) {
                let region = g.next() % 2 == 0 ? (b.count - 4096 - 4096)..<b.count : 0..<4096
                let i = region.lowerBound + Int(g.next() % UInt64(region.count))
                b[i] = UInt8(truncatingIfNeeded: g.next())
            }
            // Every failure is one of LSMT's typed errors (or a read error of the file
            // under it), never some other error; a layer that opens reads in bounds.
            do {
                let d = try LayerStack(lowers: [try open(b)])
                let got = try d.readBytes(at: 0, count: 65536)
                #expect(got.count == min(65536, Int(d.size)))
            } catch is LSMTError {
            } catch is BlockIOError {
            } catch {
                Issue.record("unexpected error \(type(of: error)): \(error)")
            }
        }
    }

    @Test("writable layer: a torn index tail is dropped; a bad entry followed by good ones is an error")
    func tornTail() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let d = dir.file("d"), i = dir.file("i")
        let up = try WritableLayer.create(dataPath: d, indexPath: i, virtualSize: 1 << 20)
        for k in 0..<4 { try [UInt8](repeating: UInt8(k + 1), count: 4096).withUnsafeBytes { try up.write($0, at: UInt64(k) * 4096) } }
        let index = try LocalFile(path: i, mode: .readWrite)
        // A partial entry at the end, and an entry whose data never landed.
        try index.writeBytes(Segment.encode([Segment(offset: 100, length: 8, moffset: 10_000)][...]) + [1, 2, 3], at: index.size)
        let re = try WritableLayer.open(dataPath: d, indexPath: i)
        #expect(re.recoveredTornEntries == 1)
        #expect(re.segments.count == 4)
        #expect(index.size == 4096 + 4 * 16)
        // Now a bad entry in the middle.
        try index.writeBytes(Segment.encode([Segment(offset: 100, length: 8, moffset: 10_000), Segment(offset: 0, length: 8, moffset: 8)][...]), at: index.size)
        #expect(throws: LSMTError.self) { try WritableLayer.open(dataPath: d, indexPath: i) }
    }
}
