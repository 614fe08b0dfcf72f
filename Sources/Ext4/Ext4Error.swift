import CExt2fs
import Glibc

/// A libext2fs error (or an errno) with the operation and the path it happened on.
public struct Ext4Error: Error, CustomStringConvertible, Equatable {
    /// What was being done ("open", "read inode", "list directory", ...).
    public var operation: String
    /// The path inside the file system (or the block file's name for "open").
    public var path: String
    /// An errno value (below 256) or a libext2fs error code.
    public var code: Int

    /// - Parameters:
    ///   - operation: what was being done.
    ///   - path: where, inside the file system.
    ///   - code: an errno value or a libext2fs `errcode_t`.
    public init(operation: String, path: String, code: Int) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String {
        let text = code < 256 ? String(cString: strerror(Int32(code))) : String(cString: error_message(errcode_t(code)))
        return "ext4: \(operation) '\(path)': \(text)"
    }
}
