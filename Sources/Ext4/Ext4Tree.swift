import CExt2fs
import Glibc

/// A regular file found by a walk: its path (from the root, `/`-separated) and inode.
public struct Ext4FileRef: Sendable, Hashable {
    /// The path, starting with `/`.
    public var path: String
    /// The inode number.
    public var inode: ext2_ino_t

    /// A file at `path` with inode `inode`.
    public init(path: String, inode: ext2_ino_t) {
        self.path = path
        self.inode = inode
    }
}

extension Ext4Filesystem {
    /// Whether inode `ino` is a directory.
    public func isDirectory(_ ino: ext2_ino_t, path: String) throws(Ext4Error) -> Bool {
        Self.isDirectory(try readInode(ino, path: path))
    }

    /// Whether inode `ino` is a regular file.
    public func isRegularFile(_ ino: ext2_ino_t, path: String) throws(Ext4Error) -> Bool {
        Self.isRegular(try readInode(ino, path: path))
    }

    /// The size in bytes of inode `ino`.
    public func fileSize(_ ino: ext2_ino_t, path: String) throws(Ext4Error) -> UInt64 {
        Self.size(try readInode(ino, path: path))
    }

    /// Every regular file under directory `dir` (shown as `path`), depth first, entries
    /// in directory order. Symbolic links are not followed; a directory is entered once
    /// even if a corrupt file system links it twice. At most `limit` files are returned
    /// (the walk stops there); `truncated` tells whether it stopped early.
    public func regularFiles(under dir: ext2_ino_t, path: String, limit: Int = .max) throws(Ext4Error) -> (files: [Ext4FileRef], truncated: Bool) {
        var out: [Ext4FileRef] = []
        var seen: Set<ext2_ino_t> = [dir]
        var stack: [(ext2_ino_t, String)] = [(dir, path == "/" ? "" : path)]
        while let (d, prefix) = stack.popLast() {
            var subdirs: [(ext2_ino_t, String)] = []
            for name in try children(d, path: prefix.isEmpty ? "/" : prefix) {
                let p = prefix + "/" + name
                guard let ino = lookup(d, name) else { continue }
                let inode = try readInode(ino, path: p)
                if Self.isDirectory(inode) {
                    if seen.insert(ino).inserted { subdirs.append((ino, p)) }
                } else if Self.isRegular(inode) {
                    guard out.count < limit else { return (out, true) }
                    out.append(Ext4FileRef(path: p, inode: ino))
                }
            }
            // Depth first in directory order: the first subdirectory is walked next.
            stack += subdirs.reversed()
        }
        return (out, false)
    }
}
