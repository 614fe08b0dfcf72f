import BlockIO
import CArchive
import CExt2fs
import Ext4
import Glibc
import Hashing
import Registry

/// Applies one OCI layer (tar, tar.gz or tar.zst; read with libarchive) to the ext4
/// inside an image, as overlaybd-apply does: OCI whiteouts (`.wh.<name>`) and opaque
/// directories (`.wh..wh..opq`) delete from the layers below (never what this layer
/// itself extracted), an entry replaces whatever is at its path (a directory stays a
/// directory when the entry is one too), parents are created 0755, hard links,
/// symbolic links (targets verbatim), devices, FIFOs, owners, modes, times and xattrs
/// are kept, sparse files stay sparse. Names are cleaned like Plan 9 paths: `..`
/// never climbs above the root. The stream's SHA-256 is computed while reading.
public final class TarApplier {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// What an apply did.
    public struct Result: Sendable, Equatable {
        /// SHA-256 of the bytes read (the compressed blob), "sha256:<hex>".
        public var digest: String
        public var entries = 0
        public var whiteouts = 0
        public var bytes: UInt64 = 0
    }

    let fs: Ext4Filesystem
    /// Paths (without leading "/") this layer extracted: whiteouts spare them.
    private var extracted = Set<String>()
    /// Directories this layer named, with their metadata: dated again at the end.
    private var directories: [(path: [String], meta: InodeMetadata)] = []

    public init(fs: Ext4Filesystem) { self.fs = fs }

    /// Cleans an archive path into components inside the root (`.`, empty parts and a
    /// leading `/` dropped, `..` removes the previous component or nothing at the root).
    public static func clean(_ path: String) -> [String] {
        var out: [String] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { if !out.isEmpty { out.removeLast() }; continue }
            out.append(String(part))
        }
        return out
    }

    /// Reads the archive in `source` from its start and applies every entry.
    public func apply(_ source: any BlockFile) throws -> Result {
        let reader = StreamReader(source)
        guard let a = archive_read_new() else { throw Failure("libarchive: out of memory") }
        defer { archive_read_free(a) }
        archive_read_support_filter_all(a)
        archive_read_support_format_tar(a)
        archive_read_support_format_gnutar(a)
        let box = Unmanaged.passRetained(reader)
        defer { box.release() }
        let rc = archive_read_open2(a, box.toOpaque(), nil, { _, client, buffer in
            let r = Unmanaged<StreamReader>.fromOpaque(client!).takeUnretainedValue()
            return r.next(buffer)
        }, nil, nil)
        guard rc == ARCHIVE_OK else { throw Failure("\(source.name): not a readable tar stream: \(Self.message(a))") }
        var result = Result(digest: "")
        while true {
            var entry: OpaquePointer?
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            if let e = reader.error { throw Failure("\(source.name): read failed: \(e)") }
            guard r >= ARCHIVE_WARN, let entry else {
                throw Failure("\(source.name): bad tar stream after \(result.entries) entries: \(Self.message(a))")
            }
            result.entries += 1
            if try applyEntry(a, entry, &result) { result.whiteouts += 1 }
        }
        if let e = reader.error { throw Failure("\(source.name): read failed: \(e)") }
        try finish()
        try reader.drain()
        result.digest = "sha256:" + reader.hasher.hex()
        return result
    }

    static func message(_ a: OpaquePointer) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "unknown error"
    }

    /// Applies one libarchive entry; returns true for a whiteout.
    private func applyEntry(_ a: OpaquePointer, _ entry: OpaquePointer, _ result: inout Result) throws -> Bool {
        let rawName = archive_entry_pathname_utf8(entry).map { String(cString: $0) }
            ?? archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
        var meta = InodeMetadata(permissions: UInt16(archive_entry_perm(entry) & 0o7777),
                                 uid: UInt32(truncatingIfNeeded: archive_entry_uid(entry)),
                                 gid: UInt32(truncatingIfNeeded: archive_entry_gid(entry)),
                                 mtime: Int64(archive_entry_mtime(entry)))
        meta.mtimeNanoseconds = UInt32(clamping: max(0, archive_entry_mtime_nsec(entry)))
        if archive_entry_xattr_reset(entry) > 0 {
            var n: UnsafePointer<CChar>?, v: UnsafeRawPointer?, size = 0
            while archive_entry_xattr_next(entry, &n, &v, &size) == ARCHIVE_OK, let n {
                let value = v.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                meta.xattrs.append((String(cString: n), value))
            }
        }
        let link = (archive_entry_hardlink_utf8(entry) ?? archive_entry_hardlink(entry)).map { String(cString: $0) }
        let symlink = (archive_entry_symlink_utf8(entry) ?? archive_entry_symlink(entry)).map { String(cString: $0) } ?? ""
        let layerEntry = LayerEntry(name: rawName, type: Int32(archive_entry_filetype(entry)), hardlink: link, symlink: symlink,
                                    meta: meta, size: UInt64(max(0, archive_entry_size(entry))),
                                    major: UInt32(archive_entry_rdevmajor(entry)), minor: UInt32(archive_entry_rdevminor(entry)))
        let shown = "/" + Self.clean(rawName).joined(separator: "/")
        let size = layerEntry.size
        var bytes: UInt64 = 0
        let whiteout = try apply(layerEntry, content: .write { writer in
            var buf: UnsafeRawPointer?
            var n = 0
            var off: la_int64_t = 0
            while true {
                let r = archive_read_data_block(a, &buf, &n, &off)
                if r == ARCHIVE_EOF { break }
                guard r >= ARCHIVE_WARN else { throw Failure("\(shown): \(Self.message(a))") }
                guard n > 0, let buf else { continue }
                guard off >= 0, UInt64(off) + UInt64(n) <= size else {
                    throw Failure("\(shown): data past the entry's size \(size)")
                }
                try writer.write(UnsafeRawBufferPointer(start: buf, count: n), at: UInt64(off))
                bytes += UInt64(n)
            }
        })
        result.bytes += bytes
        return whiteout
    }

    /// Where a regular file's data comes from.
    public enum Content {
        /// Written into newly allocated blocks by the closure (native apply).
        case write((Ext4FileWriter) throws -> Void)
        /// Not written: the file's blocks are allocated (initialised, not zeroed) and each
        /// extent is mapped to the file's data at `dataOffset` of the target stream.
        case mapped(dataOffset: UInt64, sink: any TargetMapping)
    }

    /// Applies one entry (whiteouts, replacement, parents, every file type, metadata), the
    /// one path both the native and the metadata-only apply take; returns true for a
    /// whiteout. Directory times are set again by `finish()`.
    public func apply(_ entry: LayerEntry, content: Content) throws -> Bool {
        let path = Self.clean(entry.name)
        guard let name = path.last else { return false }   // the root itself
        let parentPath = Array(path.dropLast())
        let shown = "/" + path.joined(separator: "/")
        let meta = entry.meta
        // Whiteouts delete from the lower layers and are never created themselves.
        if name == ".wh..wh..opq" {
            guard let dir = fs.resolve(parentPath) else { return true }
            try clearOpaque(dir, path: parentPath)
            return true
        }
        if name.hasPrefix(".wh.") {
            let victim = String(name.dropFirst(4))
            let full = (parentPath + [victim]).joined(separator: "/")
            guard !extracted.contains(full), let dir = fs.resolve(parentPath) else { return true }
            try fs.remove(in: dir, name: victim, path: "/" + full)
            return true
        }
        let key = path.joined(separator: "/")
        extracted.insert(key)
        var prefix: [String] = []
        for p in parentPath { prefix.append(p); extracted.insert(prefix.joined(separator: "/")) }
        let dir = try fs.directory(parentPath, meta: meta)
        if let link = entry.hardlink {
            let targetPath = Self.clean(link)
            guard !targetPath.isEmpty, let target = fs.resolve(targetPath) else {
                throw Failure("\(shown): hard link target '/\(targetPath.joined(separator: "/"))' does not exist in the image")
            }
            try fs.makeHardlink(in: dir, name: name, target: target, path: shown)
            return false
        }
        let type = entry.type
        switch type {
        case Int32(LINUX_S_IFDIR):
            try fs.makeDirectory(in: dir, name: name, meta: meta, path: shown)
            directories.append((path, meta))
        case Int32(LINUX_S_IFREG):
            switch content {
            case let .write(fill):
                try fs.makeFile(in: dir, name: name, meta: meta, size: entry.size, path: shown, fill: fill)
            case let .mapped(dataOffset, sink):
                for e in try fs.makeAllocatedFile(in: dir, name: name, meta: meta, size: entry.size, path: shown) {
                    try sink.mapTarget(deviceOffset: e.diskOffset, length: e.length, targetOffset: dataOffset + e.fileOffset)
                }
            }
        case Int32(LINUX_S_IFLNK):
            try fs.makeSymlink(in: dir, name: name, target: entry.symlink, meta: meta, path: shown)
        case Int32(LINUX_S_IFCHR), Int32(LINUX_S_IFBLK), Int32(LINUX_S_IFIFO), Int32(LINUX_S_IFSOCK):
            try fs.makeNode(in: dir, name: name, type: type, major: entry.major, minor: entry.minor, meta: meta, path: shown)
        default:
            throw Failure("\(shown): unsupported tar entry type 0o\(String(type, radix: 8))")
        }
        return false
    }

    /// Gives directories their own times back, after their entries were added.
    public func finish() throws {
        for (path, meta) in directories {
            if let ino = fs.resolve(path) { try fs.setTimes(ino, meta: meta, path: "/" + path.joined(separator: "/")) }
        }
        directories.removeAll()
    }

    /// An opaque directory: everything below it goes except what this layer extracted.
    private func clearOpaque(_ dir: ext2_ino_t, path: [String]) throws {
        let shown = "/" + path.joined(separator: "/")
        for child in try fs.children(dir, path: shown) {
            let full = (path + [child]).joined(separator: "/")
            if extracted.contains(full) {
                if let ino = fs.lookup(dir, child), Ext4Filesystem.isDirectory(try fs.readInode(ino, path: shown)) {
                    try clearOpaque(ino, path: path + [child])
                }
                continue
            }
            try fs.remove(in: dir, name: child, path: "/" + full)
        }
    }
}

/// Feeds libarchive from a BlockFile, hashing every byte read.
final class StreamReader {
    let source: any BlockFile
    var offset: UInt64 = 0
    var hasher = SHA256Stream()
    var error: (any Error)?
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

    init(_ source: any BlockFile) { self.source = source }
    deinit { buffer.deallocate() }

    func next(_ out: UnsafeMutablePointer<UnsafeRawPointer?>?) -> Int {
        guard offset < source.size else { return 0 }
        do {
            let n = try source.read(into: buffer, at: offset)
            guard n > 0 else { return 0 }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += UInt64(n)
            out?.pointee = UnsafeRawPointer(buffer.baseAddress)
            return n
        } catch {
            self.error = error
            return -1
        }
    }

    /// Hashes what libarchive did not need to read (padding after the end marker).
    func drain() throws {
        while offset < source.size {
            let n = try source.read(into: buffer, at: offset)
            guard n > 0 else { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += UInt64(n)
        }
    }
}
