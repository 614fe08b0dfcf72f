import Glibc
import Image

/// The identity of an image's read-only lowers: what makes two disks able to share one
/// opened stack. It is the lowers list with every path resolved against its config's
/// folder (every field of each, bottom first: file, dir, digest, size, and the TurboOCI
/// target and gzip index), the registry the digests come
/// from, the options that change how lowers are read (acceleration layer, trace
/// recording, background download), and the global config (cache, credentials, I/O
/// engine) that opened them. Two configs in different folders that list the same layer
/// files share one entry.
public struct LowersKey: Hashable, Sendable, CustomStringConvertible {
    /// The canonical text of the identity.
    public let text: String

    /// The key of `config`'s lowers, opened under the global config at `globalPath`.
    public init(config: ImageConfig, globalPath: String) {
        var parts: [String] = ["global=\(globalPath)", "repo=\(config.repoBlobUrl)",
                               "accel=\(config.accelerationLayer)",
                               "trace=\(config.recordTracePath.isEmpty ? "" : config.resolve(config.recordTracePath))",
                               "download=\(config.download.map { String(describing: $0) } ?? "inherit")"]
        for (i, l) in config.lowers.enumerated() {
            // Every field of the lower (a field added later is part of the identity by
            // default), with its paths resolved.
            var r = l
            for path in [\ImageConfig.Lower.file, \.dir, \.targetFile, \.gzipIndex] where !r[keyPath: path].isEmpty {
                r[keyPath: path] = LowersKey.canonical(config.resolve(r[keyPath: path]))
            }
            parts.append("[\(i)] \(String(reflecting: r))")
        }
        text = parts.joined(separator: "\n")
    }

    public var description: String { text }

    /// The real path of an existing file or folder (links and `..` resolved), else the
    /// path with `.`, `..` and repeated slashes folded.
    static func canonical(_ path: String) -> String {
        if let p = realpath(path, nil) {
            defer { free(p) }
            return String(cString: p)
        }
        return DiskRegistry.normalize(path)
    }
}
