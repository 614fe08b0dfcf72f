import Testing
import TestSupport
import Trace

@Suite("Replay plan")
struct ReplayPlanTests {
    static func r(_ layer: UInt32, _ offset: Int64, _ count: UInt64) -> TraceRecord {
        TraceRecord(layerIndex: layer, count: count, offset: offset)
    }

    @Test("adjacent and overlapping records merge; gaps do not; ranges take the place of their first record")
    func examples() {
        let plan = ReplayPlan(records: [
            Self.r(0, 8192, 4096),     // 0
            Self.r(1, 0, 4096),        // 1
            Self.r(0, 0, 4096),        // 2: gap 4096..8192 to record 0
            Self.r(0, 12288, 4096),    // 3: adjacent to record 0
            Self.r(0, 10000, 5000),    // 4: overlaps 0 and 3
            Self.r(1, 4096, 4096),     // 5: adjacent to 1
        ], maxRange: 1 << 20)
        #expect(plan.ranges == [
            ReplayRange(layerIndex: 0, offset: 8192, length: 8192, firstRecord: 0),
            ReplayRange(layerIndex: 1, offset: 0, length: 8192, firstRecord: 1),
            ReplayRange(layerIndex: 0, offset: 0, length: 4096, firstRecord: 2),
        ])
        #expect(plan.totalBytes == 20480)
    }

    @Test("long runs are cut on the maxRange grid; a late record touching an early range does not move it")
    func bounded() {
        let m: UInt64 = 1 << 20
        // 5 MiB read as 64 KiB records from 0.5 MiB on, then one at the very start.
        var recs = (0..<80).map { Self.r(0, Int64(m / 2) + Int64($0) * 65536, 65536) }
        recs.append(Self.r(0, 0, 4096))
        let plan = ReplayPlan(records: recs, maxRange: m)
        #expect(plan.ranges.map(\.offset) == [m / 2, m, 2 * m, 3 * m, 4 * m, 5 * m, 0])
        #expect(plan.ranges.map(\.length) == [m / 2, m, m, m, m, m / 2, 4096])
        #expect(plan.ranges.map(\.firstRecord) == [0, 8, 24, 40, 56, 72, 80])
        #expect(plan.ranges.allSatisfy { $0.length <= m })
    }

    @Test("layer sizes: unknown layers are skipped and counted, records past the end are cut, writes are skipped")
    func layerSizes() {
        let plan = ReplayPlan(records: [
            Self.r(0, 0, 4096), Self.r(9, 0, 4096), Self.r(9, 4096, 4096),
            Self.r(0, 6000, 1 << 30), Self.r(0, 50_000, 10),
            TraceRecord(op: TraceRecord.write, layerIndex: 0, count: 10, offset: 0),
        ], layerSizes: [0: 10_000])
        #expect(plan.ranges == [ReplayRange(layerIndex: 0, offset: 0, length: 4096, firstRecord: 0),
                                ReplayRange(layerIndex: 0, offset: 6000, length: 4000, firstRecord: 3)])
        #expect(plan.unknownLayers == [9] && plan.unknownLayerRecords == 2)
        #expect(plan.clippedRecords == 2 && plan.skippedWrites == 1)
        #expect(ReplayPlan(records: []).ranges.isEmpty)
    }

    /// The model: per layer a byte map of which record touched each byte first.
    @Test("property: bytes covered = union of records, no range exceeds or crosses the grid, first-access order", arguments: 0..<40)
    func property(seed: Int) {
        var g = SplitMix64(seed: UInt64(seed) &* 0x9E37_79B9 &+ 1)
        let space = 1 << 15
        let maxRange = UInt64([512, 1000, 4096, 8192, 1 << 20][Int(g.next() % 5)])
        let count = Int(g.next() % 60)
        var recs: [TraceRecord] = []
        for _ in 0..<count {
            let len = UInt64(1 + g.next() % (g.next() % 4 == 0 ? 12_000 : 700))
            let off = Int64(g.next() % UInt64(space))
            recs.append(Self.r(UInt32(g.next() % 3), off, len))
        }
        let plan = ReplayPlan(records: recs, maxRange: maxRange)
        var model = [UInt32: [Int: Int]]()  // layer -> byte -> first record
        for (i, r) in recs.enumerated() {
            for b in Int(r.offset)..<(Int(r.offset) + Int(r.count)) where model[r.layerIndex]?[b] == nil {
                model[r.layerIndex, default: [:]][b] = i
            }
        }
        var covered = [UInt32: [Int: Int]]()
        for x in plan.ranges {
            #expect(x.length > 0 && x.length <= maxRange)
            #expect(x.offset / maxRange == (x.end - 1) / maxRange, "\(x) crosses a multiple of \(maxRange)")
            var firstInRange = Int.max
            for b in Int(x.offset)..<Int(x.end) {
                #expect(covered[x.layerIndex]?[b] == nil, "byte \(b) of layer \(x.layerIndex) twice")
                covered[x.layerIndex, default: [:]][b] = 1
                firstInRange = min(firstInRange, model[x.layerIndex]?[b] ?? Int.max)
            }
            #expect(firstInRange == x.firstRecord, "\(x): the first record touching it is \(firstInRange)")
        }
        for layer in Set(model.keys).union(covered.keys) {
            #expect(Set(model[layer]?.keys ?? [:].keys) == Set(covered[layer]?.keys ?? [:].keys), "layer \(layer): covered bytes differ")
        }
        let order = plan.ranges.map(\.firstRecord)
        #expect(order == order.sorted(), "ranges are in first-access order")
        // Maximal merging: two ranges of a layer that touch lie on either side of a grid line.
        for a in plan.ranges {
            for b in plan.ranges where a.layerIndex == b.layerIndex && a.end == b.offset {
                #expect(b.offset % maxRange == 0)
            }
        }
    }
}
