import CExt2fs
import Crypto
import Glibc

/// A walk of an ext4 tree read through libext2fs: one row per path with type, mode,
/// owner, size, link count, mtime, content hash (or symlink target, or device
/// numbers) and xattrs, like the reference listings (`debugfs` derived). Hard-link
/// groups show as equal `inode` values. Used to compare converted images with the
/// trees their source images unpack to.
public struct Ext4Entry: Sendable, Equatable {
    public var path: String
    public var inode: UInt32
    public var type: String
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var links: UInt16
    public var mtime: Int64
    /// `sha256=<hex>` for regular files, `target=<link>` for symlinks, `rdev=<major>,<minor>` for devices.
    public var content: String
    /// `name="value"` pairs sorted by name, space-separated (values with non-printable bytes in hex).
    public var xattrs: String

    /// The reference listing's columns without the inode number.
    public var row: String {
        [path, type, String(mode, radix: 8).leftPad(4), "\(uid)", "\(gid)", "\(size)", "\(links)", "\(mtime)", content, xattrs]
            .joined(separator: "\t")
    }
}

extension Ext4Filesystem {
    /// Every path under the root, sorted, without the root itself.
    public func listing() throws -> [Ext4Entry] {
        var out: [Ext4Entry] = []
        try walk(Self.root, prefix: "", into: &out)
        return out.sorted { $0.path < $1.path }
    }

    private func walk(_ dir: ext2_ino_t, prefix: String, into out: inout [Ext4Entry]) throws {
        for name in try children(dir, path: prefix.isEmpty ? "/" : prefix) {
            let path = prefix + "/" + name
            guard let ino = lookup(dir, name) else { continue }
            let inode = try readInode(ino, path: path)
            let e = try entry(ino, inode, path: path)
            out.append(e)
            if e.type == "directory" { try walk(ino, prefix: path, into: &out) }
        }
    }

    private func entry(_ ino: ext2_ino_t, _ inode: ext2_inode_large, path: String) throws -> Ext4Entry {
        var inode = inode
        let fmt = Int32(inode.i_mode) & Int32(LINUX_S_IFMT)
        let type: String
        switch fmt {
        case Int32(LINUX_S_IFREG): type = "regular"
        case Int32(LINUX_S_IFDIR): type = "directory"
        case Int32(LINUX_S_IFLNK): type = "symlink"
        case Int32(LINUX_S_IFCHR): type = "chardev"
        case Int32(LINUX_S_IFBLK): type = "blockdev"
        case Int32(LINUX_S_IFIFO): type = "fifo"
        default: type = "socket"
        }
        let size = UInt64(inode.i_size) | UInt64(inode.i_size_high) << 32
        var content = ""
        if type == "regular" {
            content = "sha256=" + (try hashContent(ino, size: size, path: path))
        } else if type == "symlink" {
            let fast = withUnsafeMutablePointer(to: &inode) { p in
                p.withMemoryRebound(to: ext2_inode.self, capacity: 1) { ext2fs_is_fast_symlink($0) }
            }
            if fast != 0 {
                content = "target=" + withUnsafeBytes(of: inode.i_block) { String(decoding: $0.prefix(Int(size)), as: UTF8.self) }
            } else {
                content = "target=" + String(decoding: try readContent(ino, size: size, path: path), as: UTF8.self)
            }
        } else if type == "chardev" || type == "blockdev" {
            let b0 = inode.i_block.0, b1 = inode.i_block.1
            let (major, minor) = b0 != 0 ? ((b0 >> 8) & 0xff, b0 & 0xff) : ((b1 & 0xfff00) >> 8, (b1 & 0xff) | ((b1 >> 12) & 0xfff00))
            content = "rdev=\(major),\(minor)"
        }
        let low = Int64(Int32(bitPattern: inode.i_mtime))
        let mtime = low + (Int64(inode.i_mtime_extra & 3) << 32)
        return Ext4Entry(path: path, inode: ino, type: type, mode: inode.i_mode & 0o7777,
                         uid: UInt32(inode.i_uid) | UInt32(inode.osd2.linux2.l_i_uid_high) << 16,
                         gid: UInt32(inode.i_gid) | UInt32(inode.osd2.linux2.l_i_gid_high) << 16,
                         size: size, links: inode.i_links_count, mtime: mtime, content: content,
                         xattrs: try xattrText(ino, path: path))
    }

    private func readContent(_ ino: ext2_ino_t, size: UInt64, path: String) throws -> [UInt8] {
        var out: [UInt8] = []
        try eachChunk(ino, size: size, path: path) { out += $0 }
        return out
    }

    private func hashContent(_ ino: ext2_ino_t, size: UInt64, path: String) throws -> String {
        var h = SHA256()
        try eachChunk(ino, size: size, path: path) { h.update(bufferPointer: $0) }
        return h.finalize().map { String($0, radix: 16).leftPad(2) }.joined()
    }

    private func eachChunk(_ ino: ext2_ino_t, size: UInt64, path: String, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        var file: ext2_file_t?
        try Self.check(ext2fs_file_open(fs, ino, 0, &file), "open file", path)
        defer { ext2fs_file_close(file) }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var left = size
        while left > 0 {
            var n: UInt32 = 0
            try Self.check(ext2fs_file_read(file, buf.baseAddress, UInt32(min(UInt64(buf.count), left)), &n), "read file", path)
            guard n > 0 else { break }
            body(UnsafeRawBufferPointer(rebasing: buf[0..<Int(n)]))
            left -= UInt64(n)
        }
    }

    private func xattrText(_ ino: ext2_ino_t, path: String) throws -> String {
        var h: OpaquePointer?
        try Self.check(ext2fs_xattrs_open(fs, ino, &h), "open xattrs", path)
        defer { ext2fs_xattrs_close(&h) }
        try Self.check(ext2fs_xattrs_read(h), "read xattrs", path)
        final class Box { var items: [String] = [] }
        let box = Box()
        let rc = withExtendedLifetime(box) {
            ext2fs_xattrs_iterate(h, { name, value, len, data in
                guard let name, let data else { return 0 }
                let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: len)) } ?? []
                let printable = bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7f && $0 != 0x22 }
                let shown = printable ? "\"" + String(decoding: bytes, as: UTF8.self) + "\"" : "0x" + bytes.map { String($0, radix: 16).leftPad(2) }.joined()
                Unmanaged<Box>.fromOpaque(data).takeUnretainedValue().items.append(String(cString: name) + "=" + shown)
                return 0
            }, Unmanaged.passUnretained(box).toOpaque())
        }
        try Self.check(rc, "list xattrs", path)
        return box.items.sorted().joined(separator: " ")
    }
}

extension String {
    /// The string padded on the left with zeros to `n` characters.
    fileprivate func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
