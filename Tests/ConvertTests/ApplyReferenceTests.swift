import BlockIO
import Convert
import Ext4
import Glibc
import LSMT
import Testing
import TestSupport
import ZFile

/// overlaybd's reference layer tars applied in userspace must give the same file trees
/// as overlaybd's own reference images (lsmt/fs/*.listing.tsv), and clean ext4.
@Suite("Apply: reference layers", .serialized, .enabled(if: ReferenceFiles.shouldRun))
struct ApplyReferenceTests {
    static let epoch: Int64 = 1_700_000_000

    /// Reference rows without the inode column (lost+found's size differs: 16 KiB from
    /// mke2fs, 12 KiB from Photon's make_extfs), plus the hard-link groups.
    static func reference(_ name: String) throws -> (rows: [String], groups: Set<[String]>) {
        let text = readText(try ReferenceFiles.path("lsmt/fs/" + name))
        var rows: [String] = []
        var byInode: [String: [String]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            var cols = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            byInode[cols[1], default: []].append(cols[0])
            cols.remove(at: 1)
            if cols[0] == "/lost+found" { cols[5] = "-" }
            rows.append(cols.joined(separator: "\t"))
        }
        return (rows, Set(byInode.values.filter { $0.count > 1 }.map { $0.sorted() }))
    }

    static func ours(_ fs: Ext4Filesystem) throws -> (rows: [String], groups: Set<[String]>) {
        let list = try fs.listing()
        var byInode: [UInt32: [String]] = [:]
        for e in list { byInode[e.inode, default: []].append(e.path) }
        let rows = list.map { e -> String in
            var cols = e.row.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            if cols[0] == "/lost+found" { cols[5] = "-" }
            return cols.joined(separator: "\t")
        }
        return (rows, Set(byInode.values.filter { $0.count > 1 }.map { $0.sorted() }))
    }

    /// Writes the disk's data to a sparse raw file and runs `e2fsck -fn` on it.
    static func fsck(_ disk: LayerStack, _ dir: TemporaryDirectory) throws -> (Int32, String) {
        let raw = try LocalFile(path: dir.file("disk.raw"), mode: .createTruncate)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        for s in disk.flattenedIndex() where !s.zeroed {
            var off = s.offset * 512
            while off < s.end * 512 {
                let n = Int(min(UInt64(buf.count), s.end * 512 - off))
                let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
                try disk.readExactly(into: part, at: off)
                try raw.write(UnsafeRawBufferPointer(part), at: off)
                off += UInt64(n)
            }
        }
        try raw.truncate(to: disk.size)
        let r = run(["/usr/sbin/e2fsck", "-fn", dir.file("disk.raw")])
        return (r.status, r.out + r.err)
    }

    @Test("layer 1 (mkfs + apply) and layer 2 on top equal overlaybd's listings; e2fsck -fn is clean")
    func referenceLayers() throws {
        let dir = TemporaryDirectory("obd-apply")
        defer { dir.remove() }
        let inputs = try ReferenceFiles.path("lsmt/inputs")
        // Layer 1: empty ext4, then layer1.tar.
        let w1 = try WritableLayer.create(dataPath: dir.file("w1.data"), indexPath: dir.file("w1.index"), virtualSize: 1 << 30, sparse: true)
        let s1 = try LayerStack(lowers: [], upper: w1)
        try Ext4Maker.make(on: s1, uuid: "11111111-2222-3333-4444-555555555555", epoch: Self.epoch, scratch: dir.path)
        let fs1 = try Ext4Filesystem(file: s1, epoch: Self.epoch)
        let r1 = try TarApplier(fs: fs1).apply(LocalFile(path: inputs + "/layer1.tar"))
        let tarDigest = "sha256:" + Digest.sha256(try LocalFile(path: inputs + "/layer1.tar").readBytes(at: 0, count: 409_600))
        #expect(r1.entries > 20 && r1.digest == tarDigest)
        let got1 = try Self.ours(fs1)
        let want1 = try Self.reference("layer1.listing.tsv")
        #expect(got1.rows == want1.rows, "\(Set(got1.rows).symmetricDifference(want1.rows).sorted())")
        #expect(got1.groups == want1.groups && !want1.groups.isEmpty && want1.rows.count > 20)
        try fs1.close()
        let (rc1, out1) = try Self.fsck(s1, dir)
        #expect(rc1 == 0, "\(out1)")
        // Commit layer 1 (ZFile + tar, as a converted layer), layer 2 on top of it.
        let blob = try LocalFile(path: dir.file("l1.blob"), mode: .createExclusive)
        let writer = try ZFileWriter(output: blob, base: TarWrapper.payloadOffset, options: ZFileOptions())
        _ = try LayerCommit.write(segments: w1.segments.map { var s = $0; s.tag = 0; return s }, sources: [w1.dataFile],
                                  virtualSize: 1 << 30, defaultParent: .null, args: CommitArgs(), into: writer)
        try TarWrapper.wrap(output: blob, payloadSize: writer.compressedSize)
        let l1 = try ReadOnlyLayer(file: ZFileReader(source: TarWrapper.unwrap(LocalFile(path: dir.file("l1.blob")))!))
        let w2 = try WritableLayer.create(dataPath: dir.file("w2.data"), indexPath: dir.file("w2.index"), virtualSize: 1 << 30, sparse: true)
        let s2 = try LayerStack(lowers: [l1], upper: w2)
        let fs2 = try Ext4Filesystem(file: s2, epoch: Self.epoch)
        let r2 = try TarApplier(fs: fs2).apply(LocalFile(path: inputs + "/layer2.tar"))
        #expect(r2.whiteouts >= 2)
        let got2 = try Self.ours(fs2)
        let want2 = try Self.reference("layer1+2.listing.tsv")
        #expect(got2.rows == want2.rows, "\(Set(got2.rows).symmetricDifference(want2.rows).sorted())")
        #expect(got2.groups == want2.groups)
        try fs2.close()
        let (rc2, out2) = try Self.fsck(s2, dir)
        #expect(rc2 == 0, "\(out2)")
    }
}
