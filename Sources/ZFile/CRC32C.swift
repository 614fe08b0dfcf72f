import CISAL

/// CRC-32C as overlaybd uses it: the "raw" register (no inversion on entry or exit),
/// computed in hardware by ISA-L's `crc32_iscsi`.
public enum CRC32C {
    /// The seed of the per-block checksum ("salted" CRC).
    public static let blockSeed: UInt32 = 100_007

    /// Raw CRC-32C of `bytes` starting from register value `seed`.
    @inline(__always)
    public static func raw(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return seed }
        var crc = seed
        var p = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self))
        var left = bytes.count
        // crc32_iscsi takes an Int32 length.
        while left > 0 {
            let n = min(left, 1 << 30)
            crc = crc32_iscsi(p, Int32(n), crc)
            p += n
            left -= n
        }
        return crc
    }

    /// Raw CRC-32C of an array (not for hot paths).
    public static func raw(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { raw($0, seed: seed) }
    }
}
