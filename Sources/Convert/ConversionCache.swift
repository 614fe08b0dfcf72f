import BlockIO
import Glibc
import Hashing
import Registry

/// Layer reuse across conversions: converted layer blobs kept by the key "<options
/// fingerprint> <source chain ID>", in a plain index file (`index`: one line per entry,
/// `<sha256 of key> <blob digest> <size>`) next to the blobs (`blobs/sha256/<hex>`).
/// A line is appended only after its blob is complete; a blob that no longer matches
/// its size is ignored (and rebuilt).
public final class ConversionCache: @unchecked Sendable {
    public let directory: String
    private let lock = ReportLock()
    private var entries: [String: (digest: String, size: UInt64)] = [:]
    /// Where each blob was last pushed (`pushed`: `<digest> <host> <repository>` lines).
    private var pushed: [String: (host: String, repository: String)] = [:]

    public init(directory: String) throws {
        self.directory = directory
        makeDirectories(directory + "/blobs/sha256")
        guard access(directory + "/blobs/sha256", W_OK) == 0 else {
            throw ConvertError.options("conversion cache \(directory): cannot create or write it (\(BlockIOError.text(errno))); give --cache-dir DIR or --cache-dir none")
        }
        if let bytes = try? readAll(directory + "/index") {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                let f = line.split(separator: " ")
                guard f.count == 3, let size = UInt64(f[2]) else { continue }
                entries[String(f[0])] = (String(f[1]), size)
            }
        }
        if let bytes = try? readAll(directory + "/pushed") {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                let f = line.split(separator: " ")
                if f.count == 3 { pushed[String(f[0])] = (String(f[1]), String(f[2])) }
            }
        }
    }

    /// The registry repository a blob was pushed to by an earlier conversion.
    func pushedTo(_ digest: String) -> (host: String, repository: String)? { lock.run { pushed[digest] } }

    func recordPush(_ digest: String, host: String, repository: String) throws {
        try lock.run {
            if let p = pushed[digest], p == (host, repository) { return }
            pushed[digest] = (host, repository)
            let f = try LocalFile(path: directory + "/pushed", mode: access(directory + "/pushed", F_OK) == 0 ? .readWrite : .createExclusive, map: false)
            try f.writeBytes(Array("\(digest) \(host) \(repository)\n".utf8), at: f.size)
        }
    }

    func blobPath(_ digest: String) -> String { directory + "/blobs/" + digest.replacingFirstColon() }

    /// Entries (for tests and reports).
    public var count: Int { lock.run { entries.count } }

    func lookup(_ key: String) -> (digest: String, path: String, size: UInt64)? {
        let k = SHA256Hex.of(Array(key.utf8))
        guard let e = lock.run({ entries[k] }) else { return nil }
        let p = blobPath(e.digest)
        guard let f = try? LocalFile(path: p, map: false), f.size == e.size else { return nil }
        return (e.digest, p, e.size)
    }

    func store(_ key: String, digest: String, path: String) throws -> (digest: String, path: String, size: UInt64) {
        let dst = blobPath(digest)
        let src = try LocalFile(path: path, map: false)
        if access(dst, F_OK) != 0 {
            let tmp = dst + ".tmp-\(getpid())"
            if link(path, tmp) != 0 {
                let out = try LocalFile(path: tmp, mode: .createTruncate)
                try copyFile(src, to: out)
                try out.flush()
            }
            guard rename(tmp, dst) == 0 else { throw ConvertError.target("cache: rename \(tmp): \(BlockIOError.text(errno))") }
        }
        let k = SHA256Hex.of(Array(key.utf8))
        try lock.run {
            entries[k] = (digest, src.size)
            let line = Array("\(k) \(digest) \(src.size)\n".utf8)
            let f = try LocalFile(path: directory + "/index", mode: access(directory + "/index", F_OK) == 0 ? .readWrite : .createExclusive, map: false)
            try f.writeBytes(line, at: f.size)
            try f.flush()
        }
        return (digest, dst, src.size)
    }
}
