/// Errors of ZFile reading and writing. Each names the file.
public enum ZFileError: Error, CustomStringConvertible, Equatable {
    /// The bytes are not a ZFile (bad magic).
    case notZFile(name: String)
    /// A structural problem in the header, trailer or jump table.
    case corrupt(name: String, detail: String)
    /// A stored checksum does not match (header digest, index CRC or block CRC).
    case checksum(name: String, detail: String)
    /// A block failed to decompress to its expected size.
    case badBlock(name: String, block: Int, offset: UInt64, detail: String)
    /// A valid file using a feature obd does not implement.
    case unsupported(name: String, detail: String)
    /// The writer would produce a block overlaybd's reader cannot read.
    case blockTooLarge(block: Int, storedLength: Int)
    /// A bad writer option.
    case invalidOption(String)

    public var description: String {
        switch self {
        case let .notZFile(name): return "\(name): not a ZFile (bad magic)"
        case let .corrupt(name, detail): return "\(name): corrupt ZFile: \(detail)"
        case let .checksum(name, detail): return "\(name): ZFile checksum mismatch: \(detail)"
        case let .badBlock(name, block, offset, detail):
            return "\(name): ZFile block \(block) at offset \(offset): \(detail)"
        case let .unsupported(name, detail): return "\(name): unsupported ZFile: \(detail)"
        case let .blockTooLarge(block, len):
            return "block \(block) compresses to \(len) bytes (with its CRC), more than the 65536 bytes overlaybd's reader accepts; use a smaller block size, or allow it explicitly"
        case let .invalidOption(text): return "invalid ZFile option: \(text)"
        }
    }
}
