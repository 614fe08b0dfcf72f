/// One read of a replay: `length` bytes at `offset` of lower `layerIndex`'s layer file.
public struct ReplayRange: Sendable, Hashable, CustomStringConvertible {
    public var layerIndex: UInt32
    public var offset: UInt64
    public var length: UInt64
    /// Index of the first record (in trace order) that touches this range.
    public var firstRecord: Int

    public init(layerIndex: UInt32, offset: UInt64, length: UInt64, firstRecord: Int) {
        self.layerIndex = layerIndex
        self.offset = offset
        self.length = length
        self.firstRecord = firstRecord
    }

    public var end: UInt64 { offset + length }
    public var description: String { "layer \(layerIndex) [\(offset), +\(length)) from record \(firstRecord)" }
}

/// What to prefetch for a trace: per layer, the union of the bytes its read records
/// cover, cut at multiples of `maxRange` (so no range is longer than `maxRange` and
/// ranges line up with aligned cache refills), ordered by first access: a range takes
/// the position of the first record that touches it. Adjacent and overlapping records
/// merge; records with a gap between them do not (no byte outside the records is read).
///
/// With `layerSizes`, records of other layers are skipped (`unknownLayers`) and records
/// are cut at their layer's size (`clippedRecords`), which also bounds the plan's size
/// whatever the trace claims. Write records are skipped (`skippedWrites`).
public struct ReplayPlan: Sendable, Equatable {
    /// overlaybd's replay splits at 1 MiB; obd merges up to this by default.
    public static let defaultMaxRange: UInt64 = 4 << 20

    public let ranges: [ReplayRange]
    public let maxRange: UInt64
    /// Layer indexes the trace names that `layerSizes` does not have.
    public let unknownLayers: Set<UInt32>
    /// Records skipped because their layer is unknown.
    public let unknownLayerRecords: Int
    /// Records cut short (or dropped) because they reach past their layer's end.
    public let clippedRecords: Int
    /// 'W' records, which are not replayed.
    public let skippedWrites: Int

    /// Bytes the plan reads.
    public var totalBytes: UInt64 { ranges.reduce(0) { $0 + $1.length } }

    public init(records: [TraceRecord], maxRange: UInt64 = ReplayPlan.defaultMaxRange, layerSizes: [UInt32: UInt64]? = nil) {
        precondition(maxRange > 0, "maxRange must be positive")
        self.maxRange = maxRange
        // (offset, end, record index) per layer, in trace order.
        var perLayer: [UInt32: [(start: UInt64, end: UInt64, index: Int)]] = [:]
        var unknown = Set<UInt32>(), unknownCount = 0, clipped = 0, writes = 0
        for (i, r) in records.enumerated() {
            guard r.op == TraceRecord.read else { writes += 1; continue }
            guard r.count > 0, r.offset >= 0 else { continue }
            let start = UInt64(r.offset)
            var end = start.addingReportingOverflow(r.count).overflow ? UInt64.max : start + r.count
            if let sizes = layerSizes {
                guard let size = sizes[r.layerIndex] else {
                    unknown.insert(r.layerIndex)
                    unknownCount += 1
                    continue
                }
                if end > size {
                    clipped += 1
                    end = size
                    if start >= end { continue }
                }
            }
            perLayer[r.layerIndex, default: []].append((start, end, i))
        }
        var out: [ReplayRange] = []
        for (layer, recs) in perLayer {
            out += ReplayPlan.plan(layer: layer, records: recs, maxRange: maxRange)
        }
        out.sort { ($0.firstRecord, $0.layerIndex, $0.offset) < ($1.firstRecord, $1.layerIndex, $1.offset) }
        ranges = out
        unknownLayers = unknown
        unknownLayerRecords = unknownCount
        clippedRecords = clipped
        skippedWrites = writes
    }

    /// One layer: union of the records, cut on the `maxRange` grid, each piece stamped
    /// with the first record (lowest index) that touches it.
    static func plan(layer: UInt32, records: [(start: UInt64, end: UInt64, index: Int)], maxRange: UInt64) -> [ReplayRange] {
        // The union, as sorted disjoint, non-adjacent intervals.
        let byOffset = records.sorted { $0.start < $1.start }
        var union: [(start: UInt64, end: UInt64)] = []
        for r in byOffset {
            if let last = union.last, r.start <= last.end {
                union[union.count - 1].end = max(last.end, r.end)
            } else {
                union.append((r.start, r.end))
            }
        }
        // Pieces: each interval cut at multiples of maxRange; sorted by offset.
        var pieces: [(start: UInt64, end: UInt64)] = []
        for u in union {
            var s = u.start
            while s < u.end {
                let (q, _) = s.quotientAndRemainder(dividingBy: maxRange)
                let (cell, overflow) = (q + 1).multipliedReportingOverflow(by: maxRange)
                let e = overflow ? u.end : min(u.end, cell)
                pieces.append((s, e))
                s = e
            }
        }
        // Stamp pieces in trace order; `next` skips pieces already stamped (union-find),
        // so each piece is visited once however much the records overlap.
        var first = [Int](repeating: -1, count: pieces.count)
        var next = Array(0...pieces.count)
        func find(_ i: Int) -> Int {
            var root = i
            while next[root] != root { root = next[root] }
            var j = i
            while next[j] != root { let n = next[j]; next[j] = root; j = n }
            return root
        }
        for r in records {
            // First piece ending after r.start.
            var lo = 0, hi = pieces.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if pieces[mid].end <= r.start { lo = mid + 1 } else { hi = mid }
            }
            var p = find(lo)
            while p < pieces.count && pieces[p].start < r.end {
                first[p] = r.index
                next[p] = p + 1
                p = find(p + 1)
            }
        }
        return pieces.indices.map { i in
            ReplayRange(layerIndex: layer, offset: pieces[i].start, length: pieces[i].end - pieces[i].start, firstRecord: first[i])
        }
    }
}
