import BlockIO
import Glibc
import Hashing
import Registry

/// A blob downloaded into a local file that becomes visible under its final name only
/// once verified: bytes go into `partialPath`; `finish` makes them durable, checks their
/// SHA-256 against the digest, renames the file to `finalPath` and syncs the folder.
/// So `finalPath` never holds unverified or torn bytes, whoever wrote it (the
/// background download, `obd pull --output-dir`).
public final class VerifiedDownload: Sendable {
    /// Why a download could not be finished.
    public enum Failure: Error, CustomStringConvertible {
        /// The bytes do not hash to the digest (the partial file is discarded).
        case mismatch(path: String, expected: String, actual: String)
        case io(path: String, operation: String, errno: Int32)

        public var description: String {
            switch self {
            case let .mismatch(p, e, a): return "\(p): downloaded blob has \(a), expected \(e)"
            case let .io(p, op, e): return "\(p): \(op) failed: \(BlockIOError.text(e))"
            }
        }
    }

    public let finalPath: String
    public let partialPath: String
    public let digest: String
    public let size: UInt64
    /// The partial file; write the blob's bytes at their offsets.
    public let file: LocalFile

    /// Opens (with `resume`, keeps what an earlier attempt wrote) or starts the partial file.
    public init(finalPath: String, partialPath: String, digest: String, size: UInt64, resume: Bool) throws {
        self.finalPath = finalPath
        self.partialPath = partialPath
        self.digest = digest
        self.size = size
        let exists = access(partialPath, F_OK) == 0
        file = try LocalFile(path: partialPath, mode: exists ? .readWrite : .createExclusive, map: false)
        if !resume { try file.truncate(to: 0) }
        if file.size != size { try file.truncate(to: size) }
    }

    /// Byte ranges an earlier attempt already wrote (the file's allocated extents).
    public var writtenRuns: [Range<UInt64>] { (try? file.dataRuns(from: 0)) ?? [] }

    /// Makes the bytes durable, verifies them, and renames the file into place.
    public func finish() throws(Failure) {
        guard fdatasync(file.fd) == 0 else { throw .io(path: partialPath, operation: "fdatasync", errno: errno) }
        let actual: String
        do { actual = try SHA256Stream.digest(of: file) } catch {
            throw .io(path: partialPath, operation: "read back", errno: EIO)
        }
        guard actual == digest else {
            discard()
            throw .mismatch(path: partialPath, expected: digest, actual: actual)
        }
        guard rename(partialPath, finalPath) == 0 else { throw .io(path: finalPath, operation: "rename", errno: errno) }
        let folder = finalPath.contains("/") ? String(finalPath[..<finalPath.lastIndex(of: "/")!]) : "."
        if let d = opendir(folder.isEmpty ? "/" : folder) {
            fsync(dirfd(d))
            closedir(d)
        }
    }

    /// Removes the partial file.
    public func discard() { unlink(partialPath) }
}
