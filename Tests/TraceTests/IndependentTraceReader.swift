/// A trace reader and writer written from formats/Trace.md alone, sharing no code with
/// the Trace module (its own CRC-32C, bitwise), so the tests check obd's files against
/// the specification rather than against themselves.
enum IndependentTrace {
    struct Header: Equatable {
        var magic: UInt32
        var pad1: [UInt8]
        var dataSize: UInt64
        var checksum: UInt32
        var pad2: [UInt8]
    }

    struct Record: Equatable {
        var op: UInt8
        var pad: [UInt8]
        var layer: UInt32
        var count: UInt64
        var offset: Int64
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), register from `seed`,
    /// no inversion on entry or exit ("raw").
    static func crc32cRaw(_ bytes: ArraySlice<UInt8>, seed: UInt32 = 0) -> UInt32 {
        var crc = seed
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return crc
    }

    static func le<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, _: T.Type) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(truncatingIfNeeded: b[at + i]) << (8 * i) }
        return v
    }

    static func put<T: FixedWidthInteger>(_ v: T, into b: inout [UInt8], at: Int) {
        for i in 0..<MemoryLayout<T>.size { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
    }

    static func header(_ b: [UInt8]) -> Header {
        Header(magic: le(b, 0, UInt32.self), pad1: Array(b[4..<8]), dataSize: le(b, 8, UInt64.self),
               checksum: le(b, 16, UInt32.self), pad2: Array(b[20..<24]))
    }

    static func records(_ b: [UInt8]) -> [Record] {
        stride(from: 24, to: b.count, by: 24).map { at in
            Record(op: b[at], pad: Array(b[at + 1..<at + 4]), layer: le(b, at + 4, UInt32.self),
                   count: le(b, at + 8, UInt64.self), offset: le(b, at + 16, Int64.self))
        }
    }

    /// A trace as the specification describes it; `padding` fills every padding byte
    /// (overlaybd leaves whatever memory held; the checksum covers it).
    static func write(_ recs: [(layer: UInt32, count: UInt64, offset: Int64)], padding: UInt8 = 0) -> [UInt8] {
        var b = [UInt8](repeating: padding, count: 24 + 24 * recs.count)
        for (i, r) in recs.enumerated() {
            let at = 24 + 24 * i
            b[at] = 0x52
            put(r.layer, into: &b, at: at + 4)
            put(r.count, into: &b, at: at + 8)
            put(r.offset, into: &b, at: at + 16)
        }
        put(UInt32(0xC2EF_1820), into: &b, at: 0)
        put(UInt64(24 * recs.count), into: &b, at: 8)
        put(crc32cRaw(b[24...]), into: &b, at: 16)
        return b
    }
}
