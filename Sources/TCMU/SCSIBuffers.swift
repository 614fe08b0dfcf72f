/// The data buffers of one SCSI command: a scatter list of memory segments (the
/// command's iovecs in the TCMU data area).
public struct SCSIBuffers: @unchecked Sendable {
    public var segments: [UnsafeMutableRawBufferPointer]

    public init(_ segments: [UnsafeMutableRawBufferPointer]) { self.segments = segments }

    public var count: Int { segments.reduce(0) { $0 + $1.count } }

    /// Copies `bytes` into the buffers from their start (as much as fits); zero-fills the rest.
    /// Returns how many bytes were copied.
    @discardableResult
    public func copyIn(_ bytes: [UInt8]) -> Int {
        var done = 0
        for seg in segments {
            let n = min(seg.count, bytes.count - done)
            if n > 0 { bytes.withUnsafeBytes { seg.baseAddress!.copyMemory(from: $0.baseAddress! + done, byteCount: n) } }
            if n < seg.count { UnsafeMutableRawBufferPointer(rebasing: seg[max(n, 0)...]).initializeMemory(as: UInt8.self, repeating: 0) }
            done += max(n, 0)
        }
        return done
    }

    /// The first `limit` bytes of the buffers, joined.
    public func copyOut(limit: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(min(limit, count))
        for seg in segments where out.count < limit {
            out += UnsafeRawBufferPointer(rebasing: seg[0..<min(seg.count, limit - out.count)])
        }
        return out
    }
}
