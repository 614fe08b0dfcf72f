/// accelerated-container-image's *priority list*: the other content a trace file (at
/// `recordTracePath`, or an acceleration layer's `trace`) may have. A text file of at most
/// 64 KiB, one absolute path per line, naming files whose data is prefetched; a line ending
/// in `/` or `*` names a directory whose regular files (walked, subdirectories included)
/// are prefetched. See `formats/Trace.md` section 10.
///
/// Parsing is lenient per line and strict on size: spaces, tabs and a carriage return are
/// trimmed from both ends; empty lines are ignored; a line that is not a usable path (not
/// starting with `/`, holding a NUL or other control byte, not UTF-8) is skipped and
/// reported in `skipped`. `.` components are dropped and `..` goes up one (never above
/// the root), so no line can name anything outside the file system's root.
public struct PriorityList: Sendable, Equatable {
    /// Largest priority list (bytes), as in overlaybd and accelerated-container-image.
    public static let maxSize = 65536

    /// One usable line.
    public struct Entry: Sendable, Hashable, CustomStringConvertible {
        /// 1-based line number in the file.
        public var line: Int
        /// Path components from the root (empty: the root itself).
        public var components: [String]
        /// The line ended in `/` or `*`: prefetch the directory's files.
        public var walk: Bool

        /// An entry of line `line` naming `components`, walked when `walk`.
        public init(line: Int, components: [String], walk: Bool) {
            self.line = line
            self.components = components
            self.walk = walk
        }

        /// The path as `/a/b`, with a trailing `/` for a directory to walk.
        public var path: String { "/" + components.joined(separator: "/") + (walk && !components.isEmpty ? "/" : "") }
        public var description: String { path }
    }

    /// A line that was skipped, with why.
    public struct SkippedLine: Sendable, Hashable {
        /// 1-based line number.
        public var line: Int
        public var reason: String
    }

    /// The usable lines, in file order.
    public let entries: [Entry]
    /// Lines that were not usable paths.
    public let skipped: [SkippedLine]

    /// Parses the bytes of a priority list; `path` names the file in errors. Throws
    /// `TraceError.priorityListTooLarge` for more than `maxSize` bytes.
    public init(bytes: [UInt8], path: String) throws(TraceError) {
        guard bytes.count <= Self.maxSize else {
            throw .priorityListTooLarge(path: path, size: UInt64(bytes.count))
        }
        var entries: [Entry] = []
        var skipped: [SkippedLine] = []
        var number = 0
        for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            number += 1
            var line = raw[...]
            while let f = line.first, Self.isBlank(f) { line = line.dropFirst() }
            while let l = line.last, Self.isBlank(l) { line = line.dropLast() }
            if line.isEmpty { continue }
            switch Self.entry(Array(line), number: number) {
            case let .success(e): entries.append(e)
            case let .failure(reason): skipped.append(SkippedLine(line: number, reason: reason.text))
            }
        }
        self.entries = entries
        self.skipped = skipped
    }

    private static func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D }

    private struct Unusable: Error { let text: String }

    private static func entry(_ line: [UInt8], number: Int) -> Result<Entry, Unusable> {
        guard line.first == UInt8(ascii: "/") else { return .failure(Unusable(text: "not an absolute path")) }
        if let bad = line.first(where: { $0 < 0x20 || $0 == 0x7F }) {
            return .failure(Unusable(text: "control byte 0x\(String(bad, radix: 16))"))
        }
        guard let text = String(validating: line, as: UTF8.self) else { return .failure(Unusable(text: "not UTF-8")) }
        var body = Substring(text)
        var walk = false
        if let last = body.last, last == "/" || last == "*" {
            walk = true
            body = body.dropLast()
        }
        var components: [String] = []
        for c in body.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." { continue }
            if c == ".." { _ = components.popLast(); continue }
            guard c.utf8.count <= 255 else { return .failure(Unusable(text: "a name longer than 255 bytes")) }
            components.append(String(c))
        }
        return .success(Entry(line: number, components: components, walk: walk))
    }
}
