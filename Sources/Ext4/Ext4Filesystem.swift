import BlockIO
import CExt2fs
import Glibc

/// The ext4 file system inside a block file (an obd layer stack, the merged lowers of an
/// image, any `BlockFile`), opened in userspace through libext2fs with an I/O manager that
/// calls the file (`Ext2BlockIO`): no kernel, loop device or raw copy.
///
/// This module reads: paths to inodes (`resolve`, `resolveFollowing`), directory entries,
/// trees (`listing`, `regularFiles`) and where a file's data lies on the disk (`extents`).
/// Convert adds the writing operations in its own module. Not thread-safe: one user at a
/// time (open one per thread).
public final class Ext4Filesystem {
    /// The libext2fs handle (package-visible so that Convert's writing extension reaches it).
    package let fs: ext2_filsys
    private let channel: String
    private var closed = false
    /// Seconds every time libext2fs would take from the clock (superblock, new inodes).
    public let epoch: Int64
    /// Whether the file system was opened for writing.
    public let writable: Bool

    /// The root directory's inode number.
    public static let root = ext2_ino_t(EXT2_ROOT_INO)

    /// Opens the file system in `file`.
    /// - Parameters:
    ///   - epoch: the time libext2fs stamps on what it changes (only matters when writable).
    ///   - writable: open for writing (reads the allocation bitmaps too); otherwise only
    ///     the superblock and group descriptors are read now, everything else on demand.
    public init(file: any BlockFile, epoch: Int64 = 1, writable: Bool = true) throws(Ext4Error) {
        channel = Ext2BlockIO.register(file)
        var handle: ext2_filsys?
        let flags = (writable ? EXT2_FLAG_RW : 0) | EXT2_FLAG_64BITS
        let rc = ext2fs_open2(channel, nil, flags, 0, 0, Ext2BlockIO.manager, &handle)
        guard rc == 0, let handle else {
            Ext2BlockIO.unregister(channel)
            throw Ext4Error(operation: "open", path: file.name, code: Int(rc))
        }
        fs = handle
        self.writable = writable
        // libext2fs takes the clock when `now` is 0: never let it.
        self.epoch = max(epoch, 1)
        fs.pointee.now = time_t(self.epoch)
        fs.pointee.umask = 0
        guard writable else { return }
        let rb = ext2fs_read_bitmaps(fs)
        guard rb == 0 else {
            var h: ext2_filsys? = handle
            ext2fs_close_free(&h)
            Ext2BlockIO.unregister(channel)
            throw Ext4Error(operation: "read bitmaps", path: file.name, code: Int(rb))
        }
    }

    deinit {
        if !closed {
            var h: ext2_filsys? = fs
            ext2fs_close_free(&h)
            Ext2BlockIO.unregister(channel)
        }
    }

    /// Releases the file system; when writable, first writes the superblock, group
    /// descriptors and bitmaps.
    public func close() throws(Ext4Error) {
        guard !closed else { return }
        closed = true
        var h: ext2_filsys? = fs
        let rc = ext2fs_close_free(&h)
        Ext2BlockIO.unregister(channel)
        if rc != 0 { throw Ext4Error(operation: "close", path: "/", code: Int(rc)) }
    }

    /// The file system's block size in bytes.
    public var blockSize: UInt64 { UInt64(fs.pointee.blocksize) }

    /// Throws an `Ext4Error` for a non-zero libext2fs result.
    package static func check(_ rc: errcode_t, _ op: String, _ path: String) throws(Ext4Error) {
        if rc != 0 { throw Ext4Error(operation: op, path: path, code: Int(rc)) }
    }

    // MARK: inodes

    /// The whole (large) inode `ino`.
    package func readInode(_ ino: ext2_ino_t, path: String = "") throws(Ext4Error) -> ext2_inode_large {
        var inode = ext2_inode_large()
        let rc = withUnsafeMutablePointer(to: &inode) { p in
            p.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                ext2fs_read_inode_full(fs, ino, $0, Int32(MemoryLayout<ext2_inode_large>.size))
            }
        }
        try Self.check(rc, "read inode", path)
        return inode
    }

    package static func isDirectory(_ inode: ext2_inode_large) -> Bool { Int32(inode.i_mode) & Int32(LINUX_S_IFMT) == Int32(LINUX_S_IFDIR) }
    package static func isSymlink(_ inode: ext2_inode_large) -> Bool { Int32(inode.i_mode) & Int32(LINUX_S_IFMT) == Int32(LINUX_S_IFLNK) }
    package static func isRegular(_ inode: ext2_inode_large) -> Bool { Int32(inode.i_mode) & Int32(LINUX_S_IFMT) == Int32(LINUX_S_IFREG) }
    package static func size(_ inode: ext2_inode_large) -> UInt64 { UInt64(inode.i_size) | UInt64(inode.i_size_high) << 32 }

    // MARK: names

    /// The inode named `name` in directory `dir`, if any.
    package func lookup(_ dir: ext2_ino_t, _ name: String) -> ext2_ino_t? {
        var ino: ext2_ino_t = 0
        let rc = name.withCString { ext2fs_lookup(fs, dir, $0, Int32(strlen($0)), nil, &ino) }
        return rc == 0 ? ino : nil
    }

    /// Names in a directory (without "." and "..").
    package func children(_ dir: ext2_ino_t, path: String) throws(Ext4Error) -> [String] {
        final class Box { var names: [String] = [] }
        let box = Box()
        let rc = withExtendedLifetime(box) {
            ext2fs_dir_iterate2(fs, dir, 0, nil, { _, _, dirent, _, _, _, priv in
                guard let dirent, let priv else { return 0 }
                // The name follows the 8-byte entry header; libext2fs declares a shorter array.
                let len = Int(ext2fs_dirent_name_len(dirent))
                let name = String(decoding: UnsafeRawBufferPointer(start: UnsafeRawPointer(dirent) + 8, count: len), as: UTF8.self)
                if name != "." && name != ".." {
                    Unmanaged<Box>.fromOpaque(priv).takeUnretainedValue().names.append(name)
                }
                return 0
            }, Unmanaged.passUnretained(box).toOpaque())
        }
        try Self.check(rc, "list directory", path)
        return box.names
    }

    /// The inode at `path` (components), following symbolic links in parent components
    /// but not in the last one; nil if missing.
    public func resolve(_ path: [String]) -> ext2_ino_t? {
        guard !path.isEmpty else { return Self.root }
        var ino: ext2_ino_t = 0
        let rc = path.joined(separator: "/").withCString { ext2fs_namei(fs, Self.root, Self.root, $0, &ino) }
        return rc == 0 ? ino : nil
    }

    /// The inode at `path` (components), following symbolic links everywhere, the last
    /// component included (as `open(2)` does; links resolve inside this file system, an
    /// absolute target from its root); nil if missing or a link loops.
    public func resolveFollowing(_ path: [String]) -> ext2_ino_t? {
        guard !path.isEmpty else { return Self.root }
        var ino: ext2_ino_t = 0
        let rc = path.joined(separator: "/").withCString { ext2fs_namei_follow(fs, Self.root, Self.root, $0, &ino) }
        return rc == 0 ? ino : nil
    }
}
