/// Errors of gzip indexes and of reads through them. Each names the file (the index or
/// the gzip blob) and the byte offset or entry that is wrong.
public enum GzipError: Error, CustomStringConvertible, Equatable {
    /// The index file is shorter than its 333-byte header.
    case indexTooShort(path: String, size: UInt64)
    /// The first 8 bytes are not "ddgzidx\0".
    case badMagic(path: String, found: [UInt8])
    /// A header field has a value obd does not accept; `offset` is the field's offset.
    case badHeaderField(path: String, field: String, offset: Int, value: Int64, expected: String)
    /// The header CRC (offset 329) does not match bytes 0..<329.
    case headerChecksumMismatch(path: String, stored: UInt32, computed: UInt32)
    /// A size stated in the header disagrees with the file it describes.
    case sizeMismatch(path: String, field: String, offset: Int, stated: UInt64, actual: UInt64)
    /// The entry table at `offset` cannot be decompressed to `index_num` entries.
    case badEntryTable(path: String, offset: UInt64, reason: String)
    /// Entry `entry` (0-based) of the table is out of order or points outside its files.
    case badEntry(path: String, entry: Int, reason: String)
    /// The dictionary window of entry `entry`, at `offset`, is missing or does not
    /// decompress to exactly 32 KiB.
    case badWindow(path: String, entry: Int, offset: UInt64, reason: String)
    /// The gzip (or zlib) stream is not valid at compressed offset `offset`.
    case corruptStream(path: String, offset: UInt64, reason: String)
    /// The gzip stream ends at `offset` before its last member is complete.
    case truncatedStream(path: String, offset: UInt64)
    /// Bytes after the last member that are neither a member nor zero padding.
    case trailingGarbage(path: String, offset: UInt64)
    /// Inflating the blob from access point `entry` disagrees with the index: the blob is
    /// not the one the index was built from (or one of them is corrupt).
    case indexMismatch(path: String, entry: Int, offset: UInt64, reason: String)
    /// An option outside its range (span below 64 KiB, level outside -1...9).
    case badOption(reason: String)
    /// zlib failed in a way that says nothing about the input (out of memory).
    case zlib(operation: String, code: Int32)

    public var description: String {
        switch self {
        case let .indexTooShort(path, size):
            return "\(path): gzip index of \(size) bytes is shorter than its 333-byte header"
        case let .badMagic(path, found):
            return "\(path): magic \(found.map { String($0, radix: 16) }.joined(separator: " ")) at offset 0 is not \"ddgzidx\\0\""
        case let .badHeaderField(path, field, offset, value, expected):
            return "\(path): gzip index header field \(field) (offset \(offset)) is \(value), expected \(expected)"
        case let .headerChecksumMismatch(path, stored, computed):
            return "\(path): gzip index header CRC 0x\(String(stored, radix: 16)) (offset 329) does not match the header (0x\(String(computed, radix: 16)))"
        case let .sizeMismatch(path, field, offset, stated, actual):
            return "\(path): gzip index field \(field) (offset \(offset)) says \(stated) bytes, but the file has \(actual)"
        case let .badEntryTable(path, offset, reason):
            return "\(path): gzip index entry table at offset \(offset): \(reason)"
        case let .badEntry(path, entry, reason):
            return "\(path): gzip index entry \(entry): \(reason)"
        case let .badWindow(path, entry, offset, reason):
            return "\(path): window of gzip index entry \(entry) at offset \(offset): \(reason)"
        case let .corruptStream(path, offset, reason):
            return "\(path): corrupt gzip stream near offset \(offset): \(reason)"
        case let .truncatedStream(path, offset):
            return "\(path): gzip stream is truncated at offset \(offset)"
        case let .trailingGarbage(path, offset):
            return "\(path): bytes at offset \(offset) after the last gzip member are not a gzip member"
        case let .indexMismatch(path, entry, offset, reason):
            return "\(path): does not match its gzip index at access point \(entry) (compressed offset \(offset)): \(reason)"
        case let .badOption(reason):
            return "gzip index: \(reason)"
        case let .zlib(operation, code):
            return "zlib \(operation) failed (code \(code))"
        }
    }
}
