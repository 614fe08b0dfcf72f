import BlockIO
import Glibc

/// overlaybd's binary trace file: a 24-byte header, then 24-byte records.
///
/// Header: u32 magic 0xC2EF1820 at 0, 4 bytes padding, u64 data size (24 × records) at 8,
/// u32 checksum at 16 (raw CRC-32C from 0 over all record bytes, padding included),
/// 4 bytes padding. Record: op byte at 0 ('R'), 3 bytes padding, u32 layer index at 4,
/// u64 count at 8, i64 offset at 16. All little-endian. Padding is written as zeros and
/// read as whatever it holds (the checksum covers it). See `formats/Trace.md`.
public enum TraceFormat {
    /// The first four bytes of a binary trace (the IEEE CRC-32 of "Container Image Trace Format").
    public static let magic: UInt32 = 0xC2EF_1820
    public static let headerSize = 24
    public static let recordSize = 24
    /// Most records a trace may hold (a 384 MiB file); larger files are refused unread.
    public static let maxRecords: UInt64 = 1 << 24
    /// Largest count one record may have (overlaybd's records are at most 1 MiB).
    public static let maxRecordCount: UInt64 = 1 << 30

    /// The file's bytes for `records`: header with checksum, then the records, padding zero.
    public static func encode(_ records: [TraceRecord]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: headerSize + recordSize * records.count)
        out.withUnsafeMutableBytes { b in
            for (i, r) in records.enumerated() {
                let at = headerSize + i * recordSize
                b[at] = r.op
                b.storeBytes(of: r.layerIndex.littleEndian, toByteOffset: at + 4, as: UInt32.self)
                b.storeBytes(of: r.count.littleEndian, toByteOffset: at + 8, as: UInt64.self)
                b.storeBytes(of: r.offset.littleEndian, toByteOffset: at + 16, as: Int64.self)
            }
            let crc = TraceChecksum.raw(UnsafeRawBufferPointer(rebasing: b[headerSize...]))
            b.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            b.storeBytes(of: UInt64(records.count * recordSize).littleEndian, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(of: crc.littleEndian, toByteOffset: 16, as: UInt32.self)
        }
        return out
    }

    /// Whether `prefix` (the first bytes of a file) starts with the trace magic. A
    /// non-empty file without it is a priority list (one path per line), not a trace.
    public static func hasMagic(_ prefix: some Collection<UInt8>) -> Bool {
        guard prefix.count >= 4 else { return false }
        var v: UInt32 = 0
        for (i, byte) in prefix.prefix(4).enumerated() { v |= UInt32(byte) << (8 * UInt32(i)) }
        return v == magic
    }

    /// Whether the file `file` starts with the trace magic.
    public static func isTrace(_ file: any BlockFile) throws -> Bool {
        guard file.size >= 4 else { return false }
        return hasMagic(try file.readBytes(at: 0, count: 4))
    }

    /// The header checks that need no record bytes: length, magic, size, alignment,
    /// record limit. Returns the data size and the stored checksum.
    static func checkHeader(_ header: [UInt8], fileSize: UInt64, path: String) throws(TraceError) -> (dataSize: UInt64, checksum: UInt32) {
        guard fileSize >= UInt64(headerSize), header.count >= headerSize else {
            throw .tooShort(path: path, size: fileSize)
        }
        let (m, dataSize, checksum) = header.withUnsafeBytes { b in
            (UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
             UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
             UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        }
        guard m == magic else { throw .badMagic(path: path, found: m) }
        guard dataSize <= UInt64.max - UInt64(headerSize), fileSize == UInt64(headerSize) + dataSize else {
            throw .sizeMismatch(path: path, fileSize: fileSize, dataSize: dataSize)
        }
        guard dataSize % UInt64(recordSize) == 0 else { throw .misalignedDataSize(path: path, dataSize: dataSize) }
        let records = dataSize / UInt64(recordSize)
        guard records <= maxRecords else { throw .tooManyRecords(path: path, records: records) }
        return (dataSize, checksum)
    }

    /// Parses a whole trace file's bytes; `path` names it in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws(TraceError) -> [TraceRecord] {
        let (_, stored) = try checkHeader(Array(bytes.prefix(headerSize)), fileSize: UInt64(bytes.count), path: path)
        return try decodeRecords(bytes, from: headerSize, checksum: stored, path: path, offsetBase: headerSize)
    }

    /// Checks the checksum over `bytes[start...]` and parses those records; the byte
    /// offsets in errors are file offsets (`offsetBase` is where `bytes[start]` lies).
    /// With `checksum` nil the checksum is not checked (`TraceInspection`).
    static func decodeRecords(_ bytes: [UInt8], from start: Int, checksum stored: UInt32?, path: String,
                              offsetBase: Int) throws(TraceError) -> [TraceRecord] {
        if let stored {
            let computed = bytes.withUnsafeBytes { TraceChecksum.raw(UnsafeRawBufferPointer(rebasing: $0[start...])) }
            guard computed == stored else { throw .checksumMismatch(path: path, stored: stored, computed: computed) }
        }
        let n = (bytes.count - start) / recordSize
        var out: [TraceRecord] = []
        out.reserveCapacity(n)
        for i in 0..<n {
            let at = start + i * recordSize
            let fileOffset = UInt64(offsetBase + i * recordSize)
            let r = bytes.withUnsafeBytes { b in
                TraceRecord(op: b[at],
                            layerIndex: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self)),
                            count: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)),
                            offset: Int64(littleEndian: b.loadUnaligned(fromByteOffset: at + 16, as: Int64.self)))
            }
            guard r.op == TraceRecord.read || r.op == TraceRecord.write else {
                throw .badOperation(path: path, offset: fileOffset, op: r.op)
            }
            guard r.count <= maxRecordCount else { throw .absurdCount(path: path, offset: fileOffset, count: r.count) }
            guard r.offset >= 0, UInt64(r.offset) <= UInt64(Int64.max) - r.count else {
                throw .recordOutOfRange(path: path, offset: fileOffset, recordOffset: r.offset, count: r.count)
            }
            out.append(r)
        }
        return out
    }

    /// Reads and checks the trace in `file` (header first, so a hostile data size is
    /// refused before anything is allocated for it). Throws `TraceError` for a bad trace
    /// and the file's own error when it cannot be read.
    public static func read(from file: any BlockFile) throws -> [TraceRecord] {
        let size = file.size
        let head = try file.readBytes(at: 0, count: Int(min(size, UInt64(headerSize))))
        let (dataSize, stored) = try checkHeader(head, fileSize: size, path: file.name)
        let body = try file.readBytes(at: UInt64(headerSize), count: Int(dataSize))
        return try decodeRecords(body, from: 0, checksum: stored, path: file.name, offsetBase: headerSize)
    }

    /// Reads and checks the trace at `path`.
    public static func read(path: String) throws -> [TraceRecord] {
        let file: LocalFile
        do { file = try LocalFile(path: path, map: false) } catch BlockIOError.open(_, let e) {
            throw TraceError.io(path: path, operation: "open", errno: e)
        }
        return try read(from: file)
    }

    /// Writes `records` to `path` so that readers never see a partial trace: into
    /// `<path>.tmp` (made durable), then renamed over `path`.
    public static func write(_ records: [TraceRecord], to path: String) throws(TraceError) {
        let bytes = encode(records)
        let tmp = path + ".tmp"
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path: tmp, operation: "create", errno: errno) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = n < 0 ? errno : EIO
                close(fd)
                unlink(tmp)
                throw .io(path: tmp, operation: "write", errno: e)
            }
            done += n
        }
        if fsync(fd) != 0 {
            let e = errno
            close(fd)
            unlink(tmp)
            throw .io(path: tmp, operation: "fsync", errno: e)
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw .io(path: path, operation: "rename from \(tmp)", errno: e)
        }
    }
}
