import Glibc

/// Errors of trace files and record sessions. Each names the file and, for a bad
/// header or record, the byte offset in the file and the offending value.
public enum TraceError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened, read, written or created (`errno`).
    case io(path: String, operation: String, errno: Int32)
    /// The file is shorter than the 24-byte header.
    case tooShort(path: String, size: UInt64)
    /// The first four bytes are not the trace magic 0xC2EF1820.
    case badMagic(path: String, found: UInt32)
    /// The file size is not 24 + the header's data size.
    case sizeMismatch(path: String, fileSize: UInt64, dataSize: UInt64)
    /// The header's data size (at offset 8) is not a multiple of the 24-byte record size.
    case misalignedDataSize(path: String, dataSize: UInt64)
    /// More records than a trace may hold (`TraceFormat.maxRecords`).
    case tooManyRecords(path: String, records: UInt64)
    /// The header's checksum (at offset 16) does not match the record bytes.
    case checksumMismatch(path: String, stored: UInt32, computed: UInt32)
    /// The record at byte `offset` has an operation byte other than 'R' or 'W'.
    case badOperation(path: String, offset: UInt64, op: UInt8)
    /// The record at byte `offset` has a negative offset, or offset + count overflows.
    case recordOutOfRange(path: String, offset: UInt64, recordOffset: Int64, count: UInt64)
    /// The record at byte `offset` has a count above `TraceFormat.maxRecordCount`.
    case absurdCount(path: String, offset: UInt64, count: UInt64)
    /// `<trace>.lock` already exists: another recording runs, or one crashed.
    case lockExists(path: String)
    /// A recording was asked for while one is already running on this image.
    case alreadyRecording(path: String, running: String)
    /// A priority list (a trace file without the magic) larger than `PriorityList.maxSize`.
    case priorityListTooLarge(path: String, size: UInt64)

    public var description: String {
        switch self {
        case let .io(path, op, e):
            return "\(path): \(op) failed: \(String(cString: strerror(e)))"
        case let .tooShort(path, size):
            return "\(path): trace of \(size) bytes is shorter than its 24-byte header"
        case let .badMagic(path, found):
            return "\(path): magic 0x\(String(found, radix: 16)) at offset 0 is not the trace magic 0xc2ef1820"
        case let .sizeMismatch(path, fileSize, dataSize):
            return "\(path): file size \(fileSize) is not 24 + data size \(dataSize) (header offset 8)"
        case let .misalignedDataSize(path, dataSize):
            return "\(path): data size \(dataSize) (header offset 8) is not a multiple of the 24-byte record size"
        case let .tooManyRecords(path, records):
            return "\(path): \(records) records exceed the limit of \(TraceFormat.maxRecords)"
        case let .checksumMismatch(path, stored, computed):
            return "\(path): checksum 0x\(String(stored, radix: 16)) (header offset 16) does not match the records (0x\(String(computed, radix: 16)))"
        case let .badOperation(path, offset, op):
            return "\(path): record at offset \(offset) has operation byte 0x\(String(op, radix: 16)), not 'R' or 'W'"
        case let .recordOutOfRange(path, offset, recordOffset, count):
            return "\(path): record at offset \(offset) covers [\(recordOffset), +\(count)), outside the range of a file"
        case let .absurdCount(path, offset, count):
            return "\(path): record at offset \(offset) has a count of \(count) bytes, above the limit of \(TraceFormat.maxRecordCount)"
        case let .lockExists(path):
            return "\(path): exists: another trace recording runs, or an earlier one did not finish (remove it to record again)"
        case let .alreadyRecording(path, running):
            return "\(path): cannot start recording: this image already records into \(running)"
        case let .priorityListTooLarge(path, size):
            return "\(path): priority list of \(size) bytes is over the limit of \(PriorityList.maxSize) bytes (64 KiB)"
        }
    }
}
