import BlockIO
import FoundationEssentials

/// Path helpers for configs whose paths are relative to the config's folder.
public enum Paths {
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func resolve(_ p: String, against base: String) -> String {
        if p.hasPrefix("/") || p.isEmpty { return p }
        return base == "." ? p : base + "/" + p
    }

    /// `text` without a leading "`path`: " (errors that already name the file).
    static func withoutLeadingPath(_ text: String, _ path: String) -> String {
        text.hasPrefix(path + ": ") ? String(text.dropFirst(path.count + 2)) : text
    }

    /// Largest configuration file obd reads.
    static let maxConfigSize: UInt64 = 16 << 20

    /// The bytes of a configuration file, with a clear error if it cannot be read.
    static func readConfigBytes(_ path: String) throws -> Data {
        let file: LocalFile
        do {
            file = try LocalFile(path: path)
        } catch let e as BlockIOError {
            throw ImageError.config(path: path, detail: "cannot read: " + withoutLeadingPath(e.description, path))
        }
        guard file.size <= maxConfigSize else {
            throw ImageError.config(path: path, detail: "file of \(file.size) bytes is too large for a configuration")
        }
        return Data(try file.readBytes(at: 0, count: Int(file.size)))
    }
}
