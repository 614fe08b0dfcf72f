import CISAL

/// The trace header's checksum: CRC-32C in overlaybd's "raw" form (register starts at 0,
/// no inversion on entry or exit), computed by ISA-L's `crc32_iscsi`. Because the raw
/// register is not inverted, checksumming records one by one (as overlaybd does) gives
/// the same value as checksumming all record bytes at once.
enum TraceChecksum {
    static func raw(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return seed }
        var crc = seed
        var p = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self))
        var left = bytes.count
        while left > 0 {
            let n = min(left, 1 << 30)  // crc32_iscsi takes an Int32 length
            crc = crc32_iscsi(p, Int32(n), crc)
            p += n
            left -= n
        }
        return crc
    }
}
