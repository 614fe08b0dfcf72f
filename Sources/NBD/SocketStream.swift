import Glibc
import Threading

/// Blocking whole-buffer reads and writes on a socket file descriptor.
struct SocketStream {
    let fd: Int32

    enum Failure: Error { case closed, error(Int32) }

    /// Fills `buf` or throws `.closed` if the peer closed first.
    func readExactly(_ buf: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buf.count {
            let n = retryingInterrupted { recv(fd, buf.baseAddress! + done, buf.count - done, 0) }
            if n == 0 { throw Failure.closed }
            if n < 0 { throw Failure.error(errno) }
            done += n
        }
    }

    func readBytes(_ count: Int) throws -> [UInt8] {
        var b = [UInt8](repeating: 0, count: count)
        try b.withUnsafeMutableBytes { try readExactly($0) }
        return b
    }

    func readU16() throws -> UInt16 { UInt16(bigEndian: try readBytes(2).withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }) }
    func readU32() throws -> UInt32 { UInt32(bigEndian: try readBytes(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
    func readU64() throws -> UInt64 { UInt64(bigEndian: try readBytes(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) }

    func writeAll(_ buf: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buf.count {
            let n = retryingInterrupted { send(fd, buf.baseAddress! + done, buf.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                throw Failure.error(errno)
            }
            done += n
        }
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeAll($0) }
    }
}

/// Big-endian encoding helpers for protocol messages.
struct WireBuilder {
    var bytes: [UInt8] = []
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func raw(_ b: [UInt8]) { bytes += b }
}
