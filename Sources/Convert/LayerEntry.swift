import CExt2fs

/// One entry of a layer tar, independent of who parsed it (libarchive for the native
/// apply, `TarHeaderWalker` for the metadata-only apply and tar-meta import): what
/// `TarApplier` needs to apply it to the ext4.
public struct LayerEntry: Sendable, Equatable {
    /// The entry's name as the archive gives it (cleaned by `TarApplier.clean`).
    public var name: String
    /// LINUX_S_IF* of the entry (regular, directory, symbolic link, devices, FIFO, socket).
    public var type: Int32
    /// Target of a hard link (the entry is then a new name for that inode), else nil.
    public var hardlink: String?
    /// Target of a symbolic link, stored verbatim.
    public var symlink: String
    /// Owner, permission bits, times and xattrs.
    public var meta: InodeMetadata
    /// Bytes of a regular file's data.
    public var size: UInt64
    /// Device numbers of a character or block device.
    public var major: UInt32
    public var minor: UInt32

    /// An entry called `name` of type `type` (LINUX_S_IF*).
    public init(name: String, type: Int32, hardlink: String? = nil, symlink: String = "", meta: InodeMetadata,
                size: UInt64 = 0, major: UInt32 = 0, minor: UInt32 = 0) {
        self.name = name
        self.type = type
        self.hardlink = hardlink
        self.symlink = symlink
        self.meta = meta
        self.size = size
        self.major = major
        self.minor = minor
    }

    /// True for a regular file (not a hard link).
    public var isRegular: Bool { hardlink == nil && type == Int32(LINUX_S_IFREG) }
}
