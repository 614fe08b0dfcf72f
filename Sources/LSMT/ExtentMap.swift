/// The in-memory index of a writable layer: a sorted set of non-overlapping
/// segments where a newly inserted segment wins over whatever it overlaps
/// (overlapped parts are trimmed, split or removed). Adjacent segments are never
/// coalesced, as in overlaybd. Not thread-safe; the writable layer locks around it.
public struct ExtentMap: Sendable {
    public private(set) var segments: [Segment] = []

    public init() {}

    public var count: Int { segments.count }

    /// Index of the first segment that ends after `sector`.
    @inline(__always)
    public func firstIndex(endingAfter sector: UInt64) -> Int {
        segments.withUnsafeBufferPointer { s in
            var lo = 0
            var hi = s.count
            while lo < hi {
                let mid = (lo + hi) >> 1
                if s[mid].end <= sector { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
    }

    /// Inserts `seg`; it overrides every sector it covers.
    public mutating func insert(_ seg: Segment) {
        guard seg.length > 0 else { return }
        let first = firstIndex(endingAfter: seg.offset)
        var last = first
        while last < segments.count && segments[last].offset < seg.end { last += 1 }
        // segments[first..<last] overlap seg.
        var replacement: [Segment] = []
        if first < last {
            let head = segments[first]
            if head.offset < seg.offset {
                var front = head
                front.keepFront(seg.offset - head.offset)
                replacement.append(front)
            }
            replacement.append(seg)
            let tail = segments[last - 1]
            if tail.end > seg.end {
                var back = tail
                back.trimFront(seg.end - tail.offset)
                replacement.append(back)
            }
        } else {
            replacement.append(seg)
        }
        segments.replaceSubrange(first..<last, with: replacement)
    }
}
