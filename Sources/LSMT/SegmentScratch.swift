/// A growable buffer of segments owned by one thread at a time: where a reader copies
/// the index entries of one request so it can drop the index lock before reading data.
public final class SegmentScratch {
    private var storage: UnsafeMutableBufferPointer<Segment>

    public init(capacity: Int = 64) {
        storage = .allocate(capacity: max(1, capacity))
    }

    deinit { storage.deallocate() }

    /// Copies `segments` in (growing the buffer if needed) and returns the copy, valid
    /// until the next call on this scratch.
    @inline(__always)
    public func copy(_ segments: UnsafeBufferPointer<Segment>) -> UnsafeBufferPointer<Segment> {
        if storage.count < segments.count {
            storage.deallocate()
            storage = .allocate(capacity: max(segments.count, storage.count * 2))
        }
        guard let base = segments.baseAddress, let dst = storage.baseAddress else { return UnsafeBufferPointer(start: storage.baseAddress, count: 0) }
        dst.update(from: base, count: segments.count)
        return UnsafeBufferPointer(start: dst, count: segments.count)
    }
}
