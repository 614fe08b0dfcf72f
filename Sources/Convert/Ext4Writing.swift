import BlockIO
import CExt2fs
import Ext4
import Glibc

/// Owner, mode and times of an inode, as a tar entry gives them.
public struct InodeMetadata: Sendable, Equatable {
    /// Permission bits including setuid/setgid/sticky (no type bits).
    public var permissions: UInt16 = 0o755
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var mtime: Int64 = 0
    public var mtimeNanoseconds: UInt32 = 0
    public var xattrs: [(name: String, value: [UInt8])] = []

    public init(permissions: UInt16 = 0o755, uid: UInt32 = 0, gid: UInt32 = 0, mtime: Int64 = 0) {
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
    }

    public static func == (a: InodeMetadata, b: InodeMetadata) -> Bool {
        a.permissions == b.permissions && a.uid == b.uid && a.gid == b.gid && a.mtime == b.mtime
            && a.mtimeNanoseconds == b.mtimeNanoseconds && a.xattrs.map(\.name) == b.xattrs.map(\.name)
            && a.xattrs.map(\.value) == b.xattrs.map(\.value)
    }
}

/// The writing half of `Ext4Filesystem` (the reading half lives in the Ext4 module):
/// what applying a layer tar needs: new inodes, directories, files, links, device nodes,
/// removal (whiteouts), times and xattrs. The file system must be opened writable.
extension Ext4Filesystem {
    /// Dates what mke2fs dated with the clock (root, lost+found, superblock) `epoch`.
    public func stampCreation() throws {
        let meta = InodeMetadata(mtime: epoch)
        try setTimes(Self.root, meta: meta, path: "/")
        if let lf = lookup(Self.root, "lost+found") { try setTimes(lf, meta: meta, path: "/lost+found") }
        let t = UInt32(truncatingIfNeeded: epoch)
        fs.pointee.super.pointee.s_mkfs_time = t
        fs.pointee.super.pointee.s_lastcheck = t
        fs.pointee.super.pointee.s_wtime = t
        ext2fs_mark_super_dirty(fs)
    }

    // MARK: inodes

    func writeInode(_ ino: ext2_ino_t, _ inode: ext2_inode_large, path: String = "") throws {
        var copy = inode
        try withUnsafeMutablePointer(to: &copy) { p in
            try p.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                try Self.check(ext2fs_write_inode_full(fs, ino, $0, Int32(MemoryLayout<ext2_inode_large>.size)), "write inode", path)
            }
        }
    }

    func writeNewInode(_ ino: ext2_ino_t, _ inode: inout ext2_inode_large, path: String) throws {
        try withUnsafeMutablePointer(to: &inode) { p in
            try p.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                try Self.check(ext2fs_write_new_inode(fs, ino, $0), "write new inode", path)
            }
        }
        // write_new_inode fills only the small inode's fields; write the large one whole.
        try writeInode(ino, inode, path: path)
    }

    /// Sets type-preserving mode, owner and times; times use the ext4 extra fields for
    /// nanoseconds and dates past 2038.
    static func apply(_ meta: InodeMetadata, to inode: inout ext2_inode_large) {
        inode.i_mode = (inode.i_mode & UInt16(LINUX_S_IFMT)) | (meta.permissions & 0o7777)
        inode.i_uid = UInt16(truncatingIfNeeded: meta.uid)
        inode.osd2.linux2.l_i_uid_high = UInt16(truncatingIfNeeded: meta.uid >> 16)
        inode.i_gid = UInt16(truncatingIfNeeded: meta.gid)
        inode.osd2.linux2.l_i_gid_high = UInt16(truncatingIfNeeded: meta.gid >> 16)
        let low = UInt32(truncatingIfNeeded: meta.mtime)
        let epochBits = UInt32(truncatingIfNeeded: (meta.mtime - Int64(Int32(bitPattern: low))) >> 32) & 3
        let extra = (meta.mtimeNanoseconds << 2) | epochBits
        inode.i_atime = low; inode.i_mtime = low; inode.i_ctime = low; inode.i_crtime = low
        inode.i_atime_extra = extra; inode.i_mtime_extra = extra; inode.i_ctime_extra = extra; inode.i_crtime_extra = extra
    }

    /// A fresh inode of `type` (LINUX_S_IF*), owned and dated as `meta` says.
    func newInode(parent: ext2_ino_t, type: Int32, meta: InodeMetadata, path: String) throws -> (ext2_ino_t, ext2_inode_large) {
        var ino: ext2_ino_t = 0
        try Self.check(ext2fs_new_inode(fs, parent, type | Int32(meta.permissions), nil, &ino), "allocate inode", path)
        ext2fs_inode_alloc_stats2(fs, ino, 1, type == Int32(LINUX_S_IFDIR) ? 1 : 0)
        var inode = ext2_inode_large()
        inode.i_mode = UInt16(type) | (meta.permissions & 0o7777)
        inode.i_links_count = 1
        inode.i_extra_isize = UInt16(MemoryLayout<ext2_inode_large>.size - Int(EXT2_GOOD_OLD_INODE_SIZE))
        Self.apply(meta, to: &inode)
        return (ino, inode)
    }

    // MARK: names

    /// Adds `name` -> `ino` to `dir`, growing the directory when it is full.
    func link(_ dir: ext2_ino_t, _ name: String, _ ino: ext2_ino_t, fileType: Int32, path: String) throws {
        var rc = name.withCString { ext2fs_link(fs, dir, $0, ino, fileType) }
        if rc == errcode_t(EXT2_ET_DIR_NO_SPACE) {
            try Self.check(ext2fs_expand_dir(fs, dir), "expand directory", path)
            rc = name.withCString { ext2fs_link(fs, dir, $0, ino, fileType) }
        }
        try Self.check(rc, "link", path)
    }

    // MARK: public operations

    /// The directory at `path`, creating missing components (mode 0755, root-owned,
    /// dated `meta.mtime`). A symbolic link to a directory is followed.
    public func directory(_ path: [String], meta: InodeMetadata) throws -> ext2_ino_t {
        var dir = Self.root
        var sofar: [String] = []
        for name in path {
            sofar.append(name)
            let shown = "/" + sofar.joined(separator: "/")
            if var ino = lookup(dir, name) {
                var inode = try readInode(ino, path: shown)
                if Self.isSymlink(inode) {
                    var target: ext2_ino_t = 0
                    let rc = sofar.joined(separator: "/").withCString { ext2fs_namei_follow(fs, Self.root, Self.root, $0, &target) }
                    try Self.check(rc, "follow symbolic link", shown)
                    ino = target
                    inode = try readInode(ino, path: shown)
                }
                guard Self.isDirectory(inode) else {
                    throw Ext4Error(operation: "use as directory", path: shown, code: Int(ENOTDIR))
                }
                dir = ino
            } else {
                dir = try makeDirectory(in: dir, name: name, meta: InodeMetadata(permissions: 0o755, mtime: meta.mtime), path: shown)
            }
        }
        return dir
    }

    /// Creates directory `name` in `dir` (or updates it if it exists as a directory).
    @discardableResult
    public func makeDirectory(in dir: ext2_ino_t, name: String, meta: InodeMetadata, path: String) throws -> ext2_ino_t {
        if let existing = lookup(dir, name) {
            var inode = try readInode(existing, path: path)
            if Self.isDirectory(inode) {
                Self.apply(meta, to: &inode)
                try writeInode(existing, inode, path: path)
                try setXattrs(existing, meta.xattrs, path: path)
                return existing
            }
            try remove(in: dir, name: name, path: path)
        }
        var rc = name.withCString { ext2fs_mkdir(fs, dir, 0, $0) }
        if rc == errcode_t(EXT2_ET_DIR_NO_SPACE) {
            try Self.check(ext2fs_expand_dir(fs, dir), "expand directory", path)
            rc = name.withCString { ext2fs_mkdir(fs, dir, 0, $0) }
        }
        try Self.check(rc, "mkdir", path)
        guard let ino = lookup(dir, name) else { throw Ext4Error(operation: "mkdir", path: path, code: Int(ENOENT)) }
        var inode = try readInode(ino, path: path)
        Self.apply(meta, to: &inode)
        try writeInode(ino, inode, path: path)
        try setXattrs(ino, meta.xattrs, path: path)
        return ino
    }

    /// Creates regular file `name` in `dir` (replacing whatever is there) of `size`
    /// bytes; `fill` writes its data (holes stay unallocated).
    public func makeFile(in dir: ext2_ino_t, name: String, meta: InodeMetadata, size: UInt64, path: String,
                         fill: (Ext4FileWriter) throws -> Void) throws {
        let ino = try newRegularFile(in: dir, name: name, meta: meta, path: path)
        var file: ext2_file_t?
        try Self.check(ext2fs_file_open(fs, ino, Int32(EXT2_FILE_WRITE), &file), "open file", path)
        let writer = Ext4FileWriter(file: file!, path: path)
        do {
            try fill(writer)
            try Self.check(ext2fs_file_set_size2(file, ext2_off64_t(size)), "set size", path)
        } catch {
            ext2fs_file_close(file)
            throw error
        }
        try Self.check(ext2fs_file_close(file), "close file", path)
        try finishRegularFile(ino, meta: meta, path: path)
    }

    /// Creates regular file `name` in `dir` (replacing whatever is there) of `size` bytes
    /// whose blocks are allocated but never written (TurboOCI's metadata-only apply):
    /// initialised extents (reads go to the disk, not zeros) without zeroing. Returns the
    /// file's extents as `extents(of:)` gives them (cut at the size rounded up to 512), to
    /// be mapped to the file's data elsewhere.
    public func makeAllocatedFile(in dir: ext2_ino_t, name: String, meta: InodeMetadata, size: UInt64, path: String) throws -> [Ext4Extent] {
        let ino = try newRegularFile(in: dir, name: name, meta: meta, path: path)
        if size > 0 {
            var inode = try readInode(ino, path: path)
            try withUnsafeMutablePointer(to: &inode) { p in
                try p.withMemoryRebound(to: ext2_inode.self, capacity: 1) { small in
                    try Self.check(ext2fs_inode_size_set(fs, small, ext2_off64_t(size)), "set size", path)
                    let blocks = (size + blockSize - 1) / blockSize
                    let flags = EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF
                    try Self.check(ext2fs_fallocate(fs, Int32(flags), ino, small, ~blk64_t(0), 0, blocks), "allocate blocks", path)
                }
            }
            try writeInode(ino, inode, path: path)
        }
        try finishRegularFile(ino, meta: meta, path: path)
        return try extents(of: ino, path: path)
    }

    /// A new, empty, linked regular file (an empty extent tree when the file system has extents).
    private func newRegularFile(in dir: ext2_ino_t, name: String, meta: InodeMetadata, path: String) throws -> ext2_ino_t {
        if lookup(dir, name) != nil { try remove(in: dir, name: name, path: path) }
        var (ino, inode) = try newInode(parent: dir, type: Int32(LINUX_S_IFREG), meta: meta, path: path)
        if ext2fs_has_feature_extents(fs.pointee.super) != 0 {
            inode.i_flags |= UInt32(EXT4_EXTENTS_FL)
            // An empty extent tree header in i_block.
            try withUnsafeMutablePointer(to: &inode) { p in
                try p.withMemoryRebound(to: ext2_inode.self, capacity: 1) { small in
                    var handle: ext2_extent_handle_t?
                    small.pointee.i_flags &= ~UInt32(EXT4_EXTENTS_FL)
                    try Self.check(ext2fs_extent_open2(fs, ino, small, &handle), "init extents", path)
                    ext2fs_extent_free(handle)
                }
            }
        }
        try writeNewInode(ino, &inode, path: path)
        try link(dir, name, ino, fileType: Int32(EXT2_FT_REG_FILE), path: path)
        return ino
    }

    /// Owner, mode, times and xattrs of a regular file whose data is in place.
    private func finishRegularFile(_ ino: ext2_ino_t, meta: InodeMetadata, path: String) throws {
        var done = try readInode(ino, path: path)
        Self.apply(meta, to: &done)
        try writeInode(ino, done, path: path)
        try setXattrs(ino, meta.xattrs, path: path)
    }

    /// Creates symbolic link `name` -> `target` (stored verbatim).
    public func makeSymlink(in dir: ext2_ino_t, name: String, target: String, meta: InodeMetadata, path: String) throws {
        if lookup(dir, name) != nil { try remove(in: dir, name: name, path: path) }
        var rc = name.withCString { n in target.withCString { ext2fs_symlink(fs, dir, 0, n, $0) } }
        if rc == errcode_t(EXT2_ET_DIR_NO_SPACE) {
            try Self.check(ext2fs_expand_dir(fs, dir), "expand directory", path)
            rc = name.withCString { n in target.withCString { ext2fs_symlink(fs, dir, 0, n, $0) } }
        }
        try Self.check(rc, "symlink", path)
        guard let ino = lookup(dir, name) else { throw Ext4Error(operation: "symlink", path: path, code: Int(ENOENT)) }
        var inode = try readInode(ino, path: path)
        var m = meta
        m.permissions = 0o777
        Self.apply(m, to: &inode)
        try writeInode(ino, inode, path: path)
        try setXattrs(ino, meta.xattrs, path: path)
    }

    /// Creates a character or block device, FIFO or socket node.
    public func makeNode(in dir: ext2_ino_t, name: String, type: Int32, major: UInt32, minor: UInt32,
                         meta: InodeMetadata, path: String) throws {
        if lookup(dir, name) != nil { try remove(in: dir, name: name, path: path) }
        var (ino, inode) = try newInode(parent: dir, type: type, meta: meta, path: path)
        if type == Int32(LINUX_S_IFCHR) || type == Int32(LINUX_S_IFBLK) {
            // The old 16-bit encoding when it fits, else the new one (as the kernel does).
            if major < 256 && minor < 256 {
                inode.i_block.0 = major * 256 + minor
            } else {
                inode.i_block.1 = (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
            }
        }
        try writeNewInode(ino, &inode, path: path)
        let ft: Int32
        switch type {
        case Int32(LINUX_S_IFCHR): ft = Int32(EXT2_FT_CHRDEV)
        case Int32(LINUX_S_IFBLK): ft = Int32(EXT2_FT_BLKDEV)
        case Int32(LINUX_S_IFIFO): ft = Int32(EXT2_FT_FIFO)
        default: ft = Int32(EXT2_FT_SOCK)
        }
        try link(dir, name, ino, fileType: ft, path: path)
        try setXattrs(ino, meta.xattrs, path: path)
    }

    /// Adds a hard link `name` in `dir` to the inode at `target`.
    public func makeHardlink(in dir: ext2_ino_t, name: String, target: ext2_ino_t, path: String) throws {
        var inode = try readInode(target, path: path)
        guard !Self.isDirectory(inode) else { throw Ext4Error(operation: "hard link to a directory", path: path, code: Int(EPERM)) }
        if let existing = lookup(dir, name) {
            if existing == target { return }
            try remove(in: dir, name: name, path: path)
            inode = try readInode(target, path: path)
        }
        try link(dir, name, target, fileType: Self.fileType(inode), path: path)
        inode.i_links_count += 1
        try writeInode(target, inode, path: path)
    }

    static func fileType(_ inode: ext2_inode_large) -> Int32 {
        switch Int32(inode.i_mode) & Int32(LINUX_S_IFMT) {
        case Int32(LINUX_S_IFREG): return Int32(EXT2_FT_REG_FILE)
        case Int32(LINUX_S_IFDIR): return Int32(EXT2_FT_DIR)
        case Int32(LINUX_S_IFLNK): return Int32(EXT2_FT_SYMLINK)
        case Int32(LINUX_S_IFCHR): return Int32(EXT2_FT_CHRDEV)
        case Int32(LINUX_S_IFBLK): return Int32(EXT2_FT_BLKDEV)
        case Int32(LINUX_S_IFIFO): return Int32(EXT2_FT_FIFO)
        default: return Int32(EXT2_FT_SOCK)
        }
    }

    /// Removes `name` from `dir`, recursively for a directory; frees inodes whose last
    /// link goes. Missing names are fine.
    public func remove(in dir: ext2_ino_t, name: String, path: String) throws {
        guard let ino = lookup(dir, name) else { return }
        var inode = try readInode(ino, path: path)
        let isDir = Self.isDirectory(inode)
        if isDir {
            for child in try children(ino, path: path) { try remove(in: ino, name: child, path: path + "/" + child) }
            inode = try readInode(ino, path: path)
        }
        try Self.check(name.withCString { ext2fs_unlink(fs, dir, $0, ino, 0) }, "unlink", path)
        if isDir {
            var parent = try readInode(dir, path: path)
            if parent.i_links_count > 2 { parent.i_links_count -= 1 }
            try writeInode(dir, parent, path: path)
            inode.i_links_count = 0
        } else if inode.i_links_count > 0 {
            inode.i_links_count -= 1
        }
        guard inode.i_links_count == 0 else {
            try writeInode(ino, inode, path: path)
            return
        }
        try withUnsafeMutablePointer(to: &inode) { p in
            try Self.check(ext2fs_free_ext_attr(fs, ino, p), "free xattrs", path)
            try p.withMemoryRebound(to: ext2_inode.self, capacity: 1) { small in
                if ext2fs_inode_has_valid_blocks2(fs, small) != 0 {
                    try Self.check(ext2fs_punch(fs, ino, small, nil, 0, ~0), "free blocks", path)
                }
            }
        }
        inode.i_dtime = UInt32(truncatingIfNeeded: epoch)
        try writeInode(ino, inode, path: path)
        ext2fs_inode_alloc_stats2(fs, ino, -1, isDir ? 1 : 0)
    }

    /// Removes everything inside directory `dir` except the names in `keep`.
    public func clear(directory dir: ext2_ino_t, keeping keep: Set<String>, path: String) throws {
        for child in try children(dir, path: path) where !keep.contains(child) {
            try remove(in: dir, name: child, path: path + "/" + child)
        }
    }

    /// Sets the modification time of an existing inode again (directories, after their
    /// entries were added).
    public func setTimes(_ ino: ext2_ino_t, meta: InodeMetadata, path: String) throws {
        var inode = try readInode(ino, path: path)
        var m = meta
        m.permissions = inode.i_mode & 0o7777
        m.uid = UInt32(inode.i_uid) | UInt32(inode.osd2.linux2.l_i_uid_high) << 16
        m.gid = UInt32(inode.i_gid) | UInt32(inode.osd2.linux2.l_i_gid_high) << 16
        Self.apply(m, to: &inode)
        try writeInode(ino, inode, path: path)
    }

    func setXattrs(_ ino: ext2_ino_t, _ xattrs: [(name: String, value: [UInt8])], path: String) throws {
        guard !xattrs.isEmpty else { return }
        var h: OpaquePointer?
        try Self.check(ext2fs_xattrs_open(fs, ino, &h), "open xattrs", path)
        defer { ext2fs_xattrs_close(&h) }
        try Self.check(ext2fs_xattrs_read(h), "read xattrs", path)
        for (name, value) in xattrs {
            let rc = value.withUnsafeBytes { v in name.withCString { ext2fs_xattr_set(h, $0, v.baseAddress, v.count) } }
            try Self.check(rc, "set xattr \(name)", path)
        }
    }
}

/// Writes a new file's data at given offsets (what is not written stays a hole).
public final class Ext4FileWriter {
    let file: ext2_file_t
    let path: String

    init(file: ext2_file_t, path: String) {
        self.file = file
        self.path = path
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try Ext4Filesystem.check(ext2fs_file_llseek(file, offset, Int32(EXT2_SEEK_SET), nil), "seek", path)
        var done = 0
        while done < bytes.count {
            var n: UInt32 = 0
            let chunk = UInt32(min(bytes.count - done, 1 << 30))
            try Ext4Filesystem.check(ext2fs_file_write(file, bytes.baseAddress! + done, chunk, &n), "write", path)
            guard n > 0 else { throw Ext4Error(operation: "write", path: path, code: Int(EIO)) }
            done += Int(n)
        }
    }
}
