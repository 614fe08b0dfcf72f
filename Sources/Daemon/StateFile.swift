import BlockIO
import FoundationEssentials
import Glibc

/// The daemon's list of disks on disk, so a restart serves the same disks again.
///
/// Format: `{"version": 1, "disks": [<DiskSpec>, ...]}` in the order the disks were
/// added. It is replaced atomically on every add and remove: written to `<path>.tmp`,
/// synced, renamed over `<path>`, and the folder synced, so a crash leaves either the
/// old list or the new one, never a torn file.
public enum StateFile {
    /// The format version written and read.
    public static let version = 1

    struct Contents: Codable {
        var version: Int
        var disks: [DiskSpec]
    }

    /// The disks listed in the file at `path`; an absent file is an empty list.
    public static func read(path: String) throws(DaemonError) -> [DiskSpec] {
        guard access(path, F_OK) == 0 else { return [] }
        let bytes: [UInt8]
        do {
            let f = try LocalFile(path: path)
            bytes = try f.readBytes(at: 0, count: Int(min(f.size, 64 << 20)))
        } catch {
            throw .stateFile(path: path, detail: "cannot read: \(error)")
        }
        let contents: Contents
        do {
            contents = try JSONDecoder().decode(Contents.self, from: Data(bytes))
        } catch {
            throw .stateFile(path: path, detail: "not a state file: \(error)")
        }
        guard contents.version == version else {
            throw .stateFile(path: path, detail: "version \(contents.version) is not \(version)")
        }
        return contents.disks
    }

    /// Replaces the file at `path` with `disks`, atomically and durably.
    public static func write(_ disks: [DiskSpec], path: String) throws(DaemonError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do { data = try encoder.encode(Contents(version: version, disks: disks)) } catch {
            throw .stateFile(path: path, detail: "cannot encode: \(error)")
        }
        let tmp = path + ".tmp"
        unlink(tmp)
        do {
            let f = try LocalFile(path: tmp, mode: .createExclusive)
            try f.writeBytes(Array(data) + [0x0a], at: 0)
            try f.flush()
        } catch {
            unlink(tmp)
            throw .stateFile(path: path, detail: "cannot write \(tmp): \(error)")
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw .stateFile(path: path, detail: "rename: \(BlockIOError.text(e))")
        }
        let dir = open(directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            _ = fsync(dir)
            close(dir)
        }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
