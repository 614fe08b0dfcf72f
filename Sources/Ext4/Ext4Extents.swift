import CExt2fs
import Glibc

/// Where one piece of a file's data lies on the disk: `length` bytes of the file from
/// `fileOffset` are stored at `diskOffset` of the block file the file system lives in.
public struct Ext4Extent: Sendable, Hashable, CustomStringConvertible {
    /// Byte offset in the file.
    public var fileOffset: UInt64
    /// Byte offset on the disk (the block file).
    public var diskOffset: UInt64
    /// Bytes.
    public var length: UInt64

    /// A piece of a file at `fileOffset`, stored at `diskOffset`, `length` bytes long.
    public init(fileOffset: UInt64, diskOffset: UInt64, length: UInt64) {
        self.fileOffset = fileOffset
        self.diskOffset = diskOffset
        self.length = length
    }

    public var description: String { "file [\(fileOffset), +\(length)) at disk \(diskOffset)" }
}

extension Ext4Filesystem {
    /// The data of file `ino` as byte ranges of the disk, in file order, as overlaybd's
    /// fiemap gives them: each extent is cut at the file size rounded up to 512 bytes
    /// (blocks past the end of the file are left out); physically contiguous neighbours
    /// are joined. Unwritten (preallocated) extents are left out, since they read as zeros
    /// without touching the disk; so are holes. A file whose data is inline (in the
    /// inode), and anything that is not a regular file, has none.
    /// Extent-mapped and block-mapped (ext2/ext3 style) files are both read.
    public func extents(of ino: ext2_ino_t, path: String) throws(Ext4Error) -> [Ext4Extent] {
        var inode = try readInode(ino, path: path)
        guard Self.isRegular(inode), inode.i_flags & UInt32(EXT4_INLINE_DATA_FL) == 0 else { return [] }
        let size = Self.size(inode)
        let limit = size > UInt64.max - 511 ? size : (size + 511) & ~511
        guard limit > 0 else { return [] }
        var out = ExtentCollector(limit: limit, blockSize: blockSize)
        if inode.i_flags & UInt32(EXT4_EXTENTS_FL) != 0 {
            try extentTree(ino, &inode, path: path, into: &out)
        } else {
            try blockMap(ino, path: path, into: &out)
        }
        return out.extents
    }

    /// Leaves of the extent tree, in logical order.
    private func extentTree(_ ino: ext2_ino_t, _ inode: inout ext2_inode_large, path: String,
                            into out: inout ExtentCollector) throws(Ext4Error) {
        var handle: ext2_extent_handle_t?
        let rc = withUnsafeMutablePointer(to: &inode) { p in
            p.withMemoryRebound(to: ext2_inode.self, capacity: 1) { ext2fs_extent_open2(fs, ino, $0, &handle) }
        }
        try Self.check(rc, "open extent tree", path)
        defer { ext2fs_extent_free(handle) }
        var extent = ext2fs_extent()
        var op = Int32(EXT2_EXTENT_ROOT)
        // Every node is visited at most twice (down and back up); a corrupt tree cannot
        // make this loop forever.
        var steps = 0
        let maxSteps = 4 * (out.limit / out.blockSize) + 64
        while true {
            let r = ext2fs_extent_get(handle, op, &extent)
            op = Int32(EXT2_EXTENT_NEXT)
            if r == errcode_t(EXT2_ET_EXTENT_NO_NEXT) || r == errcode_t(EXT2_ET_NO_CURRENT_NODE) { return }
            try Self.check(r, "read extent tree", path)
            steps += 1
            if steps > maxSteps { throw Ext4Error(operation: "read extent tree (more nodes than the file has blocks)", path: path, code: Int(EUCLEAN)) }
            let flags = Int32(extent.e_flags)
            guard flags & Int32(EXT2_EXTENT_FLAGS_LEAF) != 0, flags & Int32(EXT2_EXTENT_FLAGS_SECOND_VISIT) == 0 else { continue }
            if flags & Int32(EXT2_EXTENT_FLAGS_UNINIT) != 0 { continue }
            if !out.add(logicalBlock: extent.e_lblk, physicalBlock: extent.e_pblk, blocks: UInt64(extent.e_len)) { return }
        }
    }

    /// Data blocks of a block-mapped file, through `ext2fs_block_iterate3`.
    private func blockMap(_ ino: ext2_ino_t, path: String, into out: inout ExtentCollector) throws(Ext4Error) {
        final class Box { var c: ExtentCollector; init(_ c: ExtentCollector) { self.c = c } }
        let box = Box(out)
        let rc = withExtendedLifetime(box) {
            ext2fs_block_iterate3(fs, ino, BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY, nil, { _, blocknr, blockcnt, _, _, priv in
                guard let blocknr, let priv, blockcnt >= 0 else { return 0 }
                let b = Unmanaged<Box>.fromOpaque(priv).takeUnretainedValue()
                return b.c.add(logicalBlock: UInt64(blockcnt), physicalBlock: blocknr.pointee, blocks: 1) ? 0 : BLOCK_ABORT
            }, Unmanaged.passUnretained(box).toOpaque())
        }
        try Self.check(rc, "map blocks", path)
        out = box.c
    }
}

/// Gathers extents, joining physically contiguous ones, up to the file's limit.
struct ExtentCollector {
    let limit: UInt64
    let blockSize: UInt64
    var extents: [Ext4Extent] = []

    init(limit: UInt64, blockSize: UInt64) {
        self.limit = limit
        self.blockSize = max(blockSize, 1)
    }

    /// Adds `blocks` blocks at logical `logicalBlock`, stored at `physicalBlock`; false
    /// once the limit is reached (nothing further can count).
    mutating func add(logicalBlock: UInt64, physicalBlock: UInt64, blocks: UInt64) -> Bool {
        let (start, o1) = logicalBlock.multipliedReportingOverflow(by: blockSize)
        guard !o1, start < limit, blocks > 0 else { return false }
        let (disk, o2) = physicalBlock.multipliedReportingOverflow(by: blockSize)
        guard !o2 else { return true }
        let (bytes, o3) = blocks.multipliedReportingOverflow(by: blockSize)
        let length = min(o3 ? UInt64.max : bytes, limit - start)
        guard disk <= UInt64.max - length else { return true }
        if let last = extents.last, last.fileOffset + last.length == start, last.diskOffset + last.length == disk {
            extents[extents.count - 1].length += length
        } else {
            extents.append(Ext4Extent(fileOffset: start, diskOffset: disk, length: length))
        }
        return start + length < limit
    }
}
