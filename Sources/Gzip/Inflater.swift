import CZlib

/// A zlib inflate stream at a stable heap address (z_stream points at itself).
final class Inflater {
    let strm: UnsafeMutablePointer<z_stream>

    /// Window bits as zlib takes them: -15 raw deflate, 47 gzip or zlib (detected).
    static let raw: Int32 = -15
    static let autoDetect: Int32 = 32 + 15

    init(windowBits: Int32) throws {
        strm = .allocate(capacity: 1)
        strm.initialize(to: z_stream())
        let rc = obd_inflateInit2(strm, windowBits)
        if rc != Z_OK {
            strm.deallocate()
            throw GzipError.zlib(operation: "inflateInit2", code: rc)
        }
    }

    deinit {
        inflateEnd(strm)
        strm.deallocate()
    }

    func reset(windowBits: Int32) throws {
        let rc = inflateReset2(strm, windowBits)
        if rc != Z_OK { throw GzipError.zlib(operation: "inflateReset2", code: rc) }
    }

    var message: String { strm.pointee.msg.map { String(cString: $0) } ?? "invalid deflate data" }

    /// At a deflate block boundary that is not the end of the last block: bit 7 of
    /// data_type set, bit 6 (inside the last block) clear.
    var atBlockBoundary: Bool { strm.pointee.data_type & 0xC0 == 0x80 }

    /// Unused bits in the last input byte consumed (data_type bits 0-2).
    var pendingBits: UInt8 { UInt8(strm.pointee.data_type & 7) }
}

/// The stream kind of a blob, from its first bytes: gzip members end with an 8-byte
/// trailer, zlib streams with a 4-byte one.
enum StreamKind {
    case gzip, zlib

    init?(_ b0: UInt8, _ b1: UInt8) {
        if b0 == 0x1F && b1 == 0x8B { self = .gzip; return }
        if b0 & 0x0F == 8, b0 >> 4 <= 7, (UInt16(b0) << 8 | UInt16(b1)) % 31 == 0 { self = .zlib; return }
        return nil
    }

    var trailerSize: UInt64 { self == .gzip ? 8 : 4 }
}
