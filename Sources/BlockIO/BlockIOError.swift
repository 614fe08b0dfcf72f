import Glibc

/// Errors of the file protocol; each names the file and, where it matters, the offset.
public enum BlockIOError: Error, CustomStringConvertible, Equatable {
    case open(path: String, errno: Int32)
    case io(name: String, operation: String, offset: UInt64, errno: Int32)
    case truncated(name: String, offset: UInt64, wanted: Int, got: Int)
    case readOnly(name: String)
    case outOfRange(name: String, offset: UInt64, length: UInt64, size: UInt64)
    case unsupported(name: String, operation: String)

    public var description: String {
        switch self {
        case let .open(path, e):
            return "\(path): cannot open: \(BlockIOError.text(e))"
        case let .io(name, op, offset, e):
            return "\(name): \(op) at offset \(offset) failed: \(BlockIOError.text(e))"
        case let .truncated(name, offset, wanted, got):
            return "\(name): file is truncated: wanted \(wanted) bytes at offset \(offset), got \(got)"
        case let .readOnly(name):
            return "\(name): file is read-only"
        case let .outOfRange(name, offset, length, size):
            return "\(name): range [\(offset), \(offset &+ length)) is outside the file (size \(size))"
        case let .unsupported(name, op):
            return "\(name): \(op) is not supported"
        }
    }

    /// The C library's text for an errno value.
    public static func text(_ e: Int32) -> String {
        String(cString: strerror(e))
    }
}
