/// A read-only, sorted, non-overlapping index with fast lookup: the index of one
/// read-only layer, or the merged index of a stack.
public struct SegmentIndex: Sendable {
    public let segments: [Segment]
    public let lookup: SegmentLookup

    public init(sorted segments: [Segment]) {
        self.segments = segments
        lookup = SegmentLookup(keys: segments.map(\.offset))
    }

    public var count: Int { segments.count }

    /// Index of the first segment that ends after `sector` (may not cover it).
    @inline(__always)
    public func firstIndex(endingAfter sector: UInt64) -> Int {
        let i = lookup.lastIndex(notAfter: sector)
        if i >= 0 && segments[i].end > sector { return i }
        return i + 1
    }
}

/// Merges layer indexes, top layer first, into one sorted, non-overlapping index:
/// each layer's segments fill only the gaps left by the layers above it. The tag
/// of every result segment is its layer's depth (0 = top).
public enum IndexMerger {
    public static func merge(topToBottom layers: [[Segment]]) -> [Segment] {
        var result: [Segment] = []
        for (depth, layer) in layers.enumerated() {
            let tag = UInt8(truncatingIfNeeded: depth)
            if result.isEmpty {
                result = layer.map { var s = $0; s.tag = tag; return s }
                continue
            }
            var merged: [Segment] = []
            merged.reserveCapacity(result.count + layer.count)
            var i = 0 // into result (covers, upper layers)
            for var seg in layer {
                seg.tag = tag
                // Emit upper segments that start before this one's end; fill gaps.
                while seg.length > 0 {
                    while i < result.count && result[i].end <= seg.offset {
                        merged.append(result[i]); i += 1
                    }
                    if i == result.count || result[i].offset >= seg.end {
                        merged.append(seg); break
                    }
                    let upper = result[i]
                    if upper.offset > seg.offset {
                        var front = seg
                        front.keepFront(upper.offset - seg.offset)
                        merged.append(front)
                    }
                    if upper.end >= seg.end { break }
                    seg.trimFront(upper.end - seg.offset)
                    merged.append(upper); i += 1
                }
            }
            while i < result.count { merged.append(result[i]); i += 1 }
            result = merged
        }
        return result
    }
}
