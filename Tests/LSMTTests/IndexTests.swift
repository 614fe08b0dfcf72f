import LSMT
import Testing
import TestSupport

@Suite("LSMT index structures")
struct IndexTests {
    @Test("segment packing matches the on-disk bit layout")
    func packing() {
        let s = Segment(offset: 0x3_FFFF_FFFF_FFFE, length: 16383, moffset: (1 << 55) - 2, zeroed: true, tag: 0xAB)
        #expect(s.offset == 0x3_FFFF_FFFF_FFFE && s.length == 16383 && s.moffset == (1 << 55) - 2 && s.zeroed && s.tag == 0xAB)
        let bytes = Segment.encode([Segment.invalid][...])
        #expect(bytes == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        let back = bytes.withUnsafeBytes { Segment.load(from: $0, at: 0) }
        #expect(back.isInvalid)
        var t = Segment(offset: 100, length: 50, moffset: 1000)
        t.trimFront(10)
        #expect(t.offset == 110 && t.length == 40 && t.moffset == 1010 && t.end == 150 && t.mend == 1050)
    }

    @Test("UUIDs: parse either case, print uppercase, reject malformed")
    func uuids() {
        let u = LayerUUID("c02fb491-b4d4-4904-8684-a014d032af78")
        #expect(u?.description == "C02FB491-B4D4-4904-8684-A014D032AF78")
        #expect(LayerUUID("C02FB491-B4D4-4904-8684-A014D032AF7") == nil)
        #expect(LayerUUID("C02FB491xB4D4-4904-8684-A014D032AF78") == nil)
        #expect(LayerUUID("G02FB491-B4D4-4904-8684-A014D032AF78") == nil)
        #expect(LayerUUID.null.description == "00000000-0000-0000-0000-000000000000")
        let r = LayerUUID.random()
        #expect(r.bytes[6] >> 4 == 4 && r.bytes[8] >> 6 == 2)
        #expect(LayerUUID(r.description) == r)
    }

    /// Sector-level model: owner id (or -1) per sector.
    static func paint(_ model: inout [Int], _ s: Segment, id: Int) {
        for i in Int(s.offset)..<Int(s.end) { model[i] = id }
    }

    @Test("extent map: newer inserts win, segments stay sorted and disjoint", arguments: 0..<10)
    func extentMap(seed: Int) {
        var g = SplitMix64(seed: UInt64(seed))
        var map = ExtentMap()
        var model = [Int](repeating: -1, count: 4096)
        var mOffsets: [Int: UInt64] = [:]
        for id in 0..<400 {
            let len = UInt32(g.next() % 300 + 1)
            let off = g.next() % (4096 - UInt64(len))
            let mo = g.next() % 1_000_000 + 8
            let s = Segment(offset: off, length: len, moffset: mo, zeroed: g.next() % 5 == 0)
            map.insert(s)
            Self.paint(&model, s, id: id)
            mOffsets[id] = mo &- off
        }
        var prevEnd: UInt64 = 0
        var seen = [Int](repeating: -1, count: 4096)
        for s in map.segments {
            #expect(s.offset >= prevEnd && s.length > 0)
            prevEnd = s.end
            for i in Int(s.offset)..<Int(s.end) { seen[i] = Int(s.moffset &- s.offset) == 0 ? 0 : 1 }
            // Each sector maps to the moffset its owner chose.
            let owner = model[Int(s.offset)]
            #expect(owner >= 0)
            #expect(s.moffset &- s.offset == mOffsets[owner]!)
            for i in Int(s.offset)..<Int(s.end) { #expect(model[i] == owner) }
        }
        for i in 0..<4096 { #expect((model[i] >= 0) == (seen[i] >= 0)) }
    }

    @Test("merged index: upper layers win; tags are depths", arguments: 0..<10)
    func merge(seed: Int) {
        var g = SplitMix64(seed: UInt64(seed) + 100)
        let layerCount = Int(g.next() % 6) + 1
        var layers: [[Segment]] = []
        var model = [Int](repeating: -1, count: 8192) // depth per sector
        for _ in 0..<layerCount {
            var map = ExtentMap()
            for _ in 0..<60 {
                let len = UInt32(g.next() % 400 + 1)
                let off = g.next() % (8192 - UInt64(len))
                map.insert(Segment(offset: off, length: len, moffset: off + 8))
            }
            layers.append(map.segments)
        }
        for depth in (0..<layerCount).reversed() {
            for s in layers[depth] { Self.paint(&model, s, id: depth) }
        }
        let merged = IndexMerger.merge(topToBottom: layers)
        var covered = [Int](repeating: -1, count: 8192)
        var prevEnd: UInt64 = 0
        for s in merged {
            #expect(s.offset >= prevEnd)
            prevEnd = s.end
            #expect(s.moffset == s.offset + 8)
            for i in Int(s.offset)..<Int(s.end) { covered[i] = Int(s.tag) }
        }
        #expect(covered == model)
    }

    @Test("fast lookup agrees with binary search", arguments: ["uniform", "clustered", "dense", "tiny"])
    func lookup(kind: String) {
        var g = SplitMix64(seed: 3)
        var keys: [UInt64] = []
        switch kind {
        case "uniform": keys = (0..<5000).map { _ in g.next() % (1 << 40) }
        case "clustered": keys = (0..<5000).map { i in UInt64(i / 100) << 30 + g.next() % 5000 }
        case "dense": keys = (0..<5000).map { UInt64($0) }
        default: keys = [17]
        }
        keys = Array(Set(keys)).sorted()
        let l = SegmentLookup(keys: keys)
        var probes: [UInt64] = [0, 1, 16, 17, 18, UInt64.max, keys.last!, keys.last! + 1, keys.first! &- 1]
        for _ in 0..<20_000 { probes.append(g.next() % (keys.last! + 1000)) }
        for k in keys { probes.append(k); probes.append(k &- 1) }
        for x in probes { #expect(l.lastIndex(notAfter: x) == l.binarySearchLastIndex(notAfter: x), "x = \(x)") }
        #expect(SegmentLookup(keys: []).lastIndex(notAfter: 5) == -1)
    }
}
