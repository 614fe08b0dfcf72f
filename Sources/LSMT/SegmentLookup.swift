/// Fast "which segment covers sector x" for a sorted, non-overlapping segment array.
///
/// A bucket table over the key range: bucket `b` covers sectors
/// `[minKey + b << shift, minKey + (b+1) << shift)` and stores how many keys lie
/// before it. About one key falls in a bucket, so a lookup is one table read plus a
/// scan of a key or two, instead of the ~log2(n) dependent cache misses of a binary
/// search. Dense clusters of keys fall back to a binary search inside their bucket,
/// which is never worse than a binary search over the whole array.
public struct SegmentLookup: Sendable {
    /// Start sector of each segment (a copy kept apart so scans touch only keys).
    public let keys: [UInt64]
    private let minKey: UInt64
    private let shift: UInt64
    private let bucketCount: Int
    private let table: [UInt32]

    public init(keys: [UInt64]) {
        self.keys = keys
        let n = keys.count
        guard n > 0 else {
            minKey = 0; shift = 63; bucketCount = 0; table = [0]
            return
        }
        minKey = keys[0]
        let span = keys[n - 1] - keys[0] + 1
        // About two buckets per key, rounded to a power of two of sectors per bucket.
        var s: UInt64 = 0
        let target = UInt64(max(1, 2 * n))
        while (span >> s) > target { s += 1 }
        shift = s
        bucketCount = Int((span - 1) >> s) + 1
        var t = [UInt32](repeating: 0, count: bucketCount + 1)
        var k = 0
        for b in 0...bucketCount {
            let start = b == bucketCount ? UInt64.max : minKey + (UInt64(b) << s)
            while k < n && keys[k] < start { k += 1 }
            t[b] = UInt32(k)
        }
        table = t
    }

    /// Index of the last key `<= x`, or -1 if every key is greater.
    @inline(__always)
    public func lastIndex(notAfter x: UInt64) -> Int {
        keys.withUnsafeBufferPointer { k in
            table.withUnsafeBufferPointer { t in
                guard x >= minKey, bucketCount > 0 else { return -1 }
                let d = (x - minKey) >> shift
                if d >= UInt64(bucketCount) { return k.count - 1 }
                let b = Int(d)
                var lo = Int(t[b])
                var hi = Int(t[b + 1])
                if hi - lo > 8 {
                    while lo < hi {
                        let mid = (lo + hi) >> 1
                        if k[mid] <= x { lo = mid + 1 } else { hi = mid }
                    }
                    return lo - 1
                }
                while lo < hi && k[lo] <= x { lo += 1 }
                return lo - 1
            }
        }
    }

    /// Index of the last key `<= x` by plain binary search (the benchmark's anchor).
    @inline(__always)
    public func binarySearchLastIndex(notAfter x: UInt64) -> Int {
        keys.withUnsafeBufferPointer { k in
            var lo = 0
            var hi = k.count
            while lo < hi {
                let mid = (lo + hi) >> 1
                if k[mid] <= x { lo = mid + 1 } else { hi = mid }
            }
            return lo - 1
        }
    }

    /// Bytes of memory the structure holds beyond the segments.
    public var memoryBytes: Int { keys.count * 8 + table.count * 4 }
}
