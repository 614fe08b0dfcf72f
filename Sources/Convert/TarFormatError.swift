/// Errors of the raw tar header walker (`TarHeaderWalker`) and of tar-meta files: what is
/// wrong, and the byte offset in the (uncompressed) stream or the entry it concerns.
public enum TarFormatError: Error, CustomStringConvertible, Equatable {
    /// The stream ends at `offset` inside a header, an extension record or a file's data.
    case truncated(path: String, offset: UInt64, reading: String)
    /// Reading the stream at `offset` failed (an I/O error, a corrupt gzip stream).
    case readFailed(path: String, offset: UInt64, reason: String)
    /// The header block at `offset` fails its checksum (unsigned and signed sums).
    case checksum(path: String, offset: UInt64, stored: Int64, computed: Int64)
    /// A numeric field of the header at `offset` is not octal (or base-256).
    case badField(path: String, offset: UInt64, field: String)
    /// A PAX extended header (at `offset`) is malformed.
    case badPax(path: String, offset: UInt64, reason: String)
    /// An extension record (GNU long name/link, PAX) larger than obd accepts.
    case extensionTooLarge(path: String, offset: UInt64, size: UInt64, limit: UInt64)
    /// A GNU or PAX sparse file: its data is not one contiguous run of the stream, so it
    /// cannot be mapped into the stream (TurboOCI).
    case sparse(path: String, entry: String)
    /// A header type obd cannot apply.
    case unsupportedType(path: String, offset: UInt64, entry: String, typeflag: UInt8)
    /// A regular file's data (tar-meta offset and size) lies outside the target stream.
    case dataOutOfRange(path: String, entry: String, offset: UInt64, size: UInt64, streamSize: UInt64)
    /// A tar-meta data offset that is not a multiple of 512 (tar data never is).
    case misaligned(path: String, entry: String, offset: UInt64)

    public var description: String {
        switch self {
        case let .truncated(path, offset, reading):
            return "\(path): the tar stream ends at offset \(offset) while reading \(reading)"
        case let .readFailed(path, offset, reason):
            return "\(path): reading the tar stream at offset \(offset) failed: \(reason)"
        case let .checksum(path, offset, stored, computed):
            return "\(path): tar header at offset \(offset) has checksum \(stored), its bytes sum to \(computed)"
        case let .badField(path, offset, field):
            return "\(path): tar header at offset \(offset): field \(field) is not a number"
        case let .badPax(path, offset, reason):
            return "\(path): PAX header at offset \(offset): \(reason)"
        case let .extensionTooLarge(path, offset, size, limit):
            return "\(path): extension record at offset \(offset) of \(size) bytes is larger than \(limit)"
        case let .sparse(path, entry):
            return "\(path): \(entry) is a sparse tar entry; its data cannot be mapped into the tar stream (TurboOCI needs contiguous file data)"
        case let .unsupportedType(path, offset, entry, typeflag):
            return "\(path): \(entry) (header at offset \(offset)) has unsupported tar type '\(typeflag >= 32 && typeflag < 127 ? String(UnicodeScalar(typeflag)) : "\\(\(typeflag))")'"
        case let .dataOutOfRange(path, entry, offset, size, streamSize):
            return "\(path): \(entry): data [\(offset), +\(size)) lies outside the tar stream of \(streamSize) bytes"
        case let .misaligned(path, entry, offset):
            return "\(path): \(entry): data offset \(offset) is not a multiple of 512"
        }
    }
}
