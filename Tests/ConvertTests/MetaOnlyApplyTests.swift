import BlockIO
import CExt2fs
import Convert
import Ext4
import Glibc
import Gzip
import LSMT
import Testing
import TestSupport

/// Copies what each mapping names from the target stream onto the disk, so a plain
/// writable layer shows the tree a warp layer would show; and records every mapping.
final class MaterialisingMapping: TargetMapping {
    let target: any BlockFile
    let disk: any BlockFile
    var mappings: [(device: UInt64, length: UInt64, target: UInt64)] = []

    init(target: any BlockFile, disk: any BlockFile) {
        self.target = target
        self.disk = disk
    }

    func mapTarget(deviceOffset: UInt64, length: UInt64, targetOffset: UInt64) throws {
        mappings.append((deviceOffset, length, targetOffset))
        let bytes = try target.readBytes(at: targetOffset, count: Int(length))
        try disk.writeBytes(bytes, at: deviceOffset)
    }
}

/// TurboOCI's metadata-only apply and tar-meta: the tree equals the native apply's model,
/// every mapping is aligned and inside its stream, tar-meta is byte-exact, hostile input
/// fails with typed errors.
@Suite("TurboOCI metadata-only apply and tar-meta", .serialized, .enabled(if: access("/usr/sbin/mke2fs", X_OK) == 0))
struct MetaOnlyApplyTests {
    struct Failure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// An empty ext4 on a fresh sparse writable layer.
    static func freshDisk(_ dir: TemporaryDirectory, _ name: String, size: UInt64 = 1 << 30) throws -> LayerStack {
        let w = try WritableLayer.create(dataPath: dir.file(name + ".data"), indexPath: dir.file(name + ".index"),
                                         virtualSize: size, sparse: true)
        let stack = try LayerStack(lowers: [], upper: w, name: name)
        try Ext4Maker.make(on: stack, uuid: "12345678-1234-1234-1234-123456789abc", epoch: 1_700_000_000, scratch: dir.path)
        return stack
    }

    /// The uncompressed stream of a layer file: itself, or a GzipFile through a fresh index.
    static func stream(_ path: String, _ dir: TemporaryDirectory) throws -> any BlockFile {
        try TurboTarget.open(LocalFile(path: path), indexPath: nil).stream
    }

    static func regularSizes(_ tar: String) -> [UInt64] {
        let r = run(["/usr/bin/env", "python3", "-c", "import tarfile,sys\nfor m in tarfile.open(sys.argv[1]):\n  m.isreg() and print(m.size)", tar])
        return r.out.split(separator: "\n").compactMap { UInt64($0) }
    }

    @Test("fixture layers (plain tar, then tar.gz) metadata-only: the tree equals the model, e2fsck is clean, every mapping is aligned and inside the stream")
    func fixtureLayers() throws {
        let dir = TemporaryDirectory("obd-metaonly")
        defer { dir.remove() }
        _ = try ConvertImageTests.makeLayers(dir)
        let disk = try Self.freshDisk(dir, "disk")
        let fs = try Ext4Filesystem(file: disk, epoch: 1_700_000_000)
        var mapped: [(String, [(device: UInt64, length: UInt64, target: UInt64)], UInt64)] = []
        for layer in ["layers/base.tar", "layers/update.tar.gz"] {
            let s = try Self.stream(dir.file(layer), dir)
            let sink = MaterialisingMapping(target: s, disk: disk)
            let r = try TarApplier(fs: fs).applyMetaOnly(stream: s, sink: sink)
            #expect(r.entries > 0 && r.bytesRead <= s.size)
            let plain = layer.hasSuffix(".gz") ? dir.file("layers/update.tar") : dir.file(layer)
            let sizes = Self.regularSizes(plain)
            #expect(r.files == sizes.count)
            #expect(r.mappedBytes == sizes.reduce(0) { $0 + (($1 + 511) & ~511) })
            mapped.append((layer, sink.mappings, s.size))
        }
        try fs.close()
        for (layer, maps, size) in mapped {
            for m in maps {
                #expect(m.device % 4096 == 0 && m.length % 512 == 0 && m.target % 512 == 0 && m.target + m.length <= size,
                        "\(layer): \(m)")
            }
        }
        let ro = try Ext4Filesystem(file: disk, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(ro)
        try ro.close()
        let model = run(["/usr/bin/env", "python3", ConvertImageTests.fixtures + "/layers.py", "model",
                         dir.file("layers/base.tar"), dir.file("layers/update.tar.gz")])
        #expect(model.status == 0, "\(model.err)")
        let want = model.out.split(separator: "\n").map(String.init)
        #expect(ours == want, "\(Set(ours).symmetricDifference(want).sorted())")
        let (rc, text) = try ApplyReferenceTests.fsck(disk, dir)
        #expect(rc == 0, "\(text)")
    }

    /// tar-meta as section 8.2 describes it, made independently with Python's tarfile:
    /// per member the bytes from its header (extension headers included) to its data,
    /// the last header's devmajor replaced by the data offset for regular files.
    static func expectedTarMeta(_ tar: String) -> [UInt8] {
        let script = """
            import tarfile, struct, sys
            raw = open(sys.argv[1], 'rb').read()
            out = bytearray()
            for m in tarfile.open(sys.argv[1]):
                blocks = bytearray(raw[m.offset:m.offset_data])
                if m.isreg():
                    blocks[-512 + 329:-512 + 337] = struct.pack('<q', m.offset_data)
                out += blocks
            sys.stdout.write(out.hex())
            """
        let r = run(["/usr/bin/env", "python3", "-c", script, tar])
        var bytes: [UInt8] = []
        var it = Array(r.out.utf8).makeIterator()
        while let a = it.next(), let b = it.next() { bytes.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!) }
        return bytes
    }

    @Test("tar-meta export is byte-exact to the description; importing it gives the same tree and the same mappings as the tar itself")
    func tarMetaRoundTrip() throws {
        let dir = TemporaryDirectory("obd-tarmeta")
        defer { dir.remove() }
        _ = try ConvertImageTests.makeLayers(dir)
        for layer in ["layers/base.tar", "layers/update.tar"] {
            let tar = try LocalFile(path: dir.file(layer))
            let out = try LocalFile(path: dir.file(layer + ".meta"), mode: .createTruncate)
            let (entries, bytes) = try TarMeta.export(stream: tar, to: out)
            let meta = try out.readBytes(at: 0, count: Int(out.size))
            #expect(entries > 5 && bytes == meta.count)
            #expect(meta == Self.expectedTarMeta(dir.file(layer)), "\(layer)")
        }
        // The CLI, from the gzip layer (offsets in the uncompressed stream).
        let cli = run([builtProduct("obd"), "apply", "--turbo-oci", "--export", dir.file("layers/update.tar.gz"), dir.file("cli.meta")])
        #expect(cli.status == 0, "\(cli.err)")
        let cliMeta = try LocalFile(path: dir.file("cli.meta"))
        #expect(try cliMeta.readBytes(at: 0, count: Int(cliMeta.size)) == Self.expectedTarMeta(dir.file("layers/update.tar")))
        // Import vs direct: same rows, same mappings.
        var results: [([String], [String])] = []
        for importing in [false, true] {
            let disk = try Self.freshDisk(dir, "disk-\(importing)")
            let fs = try Ext4Filesystem(file: disk, epoch: 1_700_000_000)
            var maps: [String] = []
            for layer in ["layers/base.tar", "layers/update.tar"] {
                let tar = try LocalFile(path: dir.file(layer))
                let sink = MaterialisingMapping(target: tar, disk: disk)
                if importing {
                    _ = try TarApplier(fs: fs).applyTarMeta(LocalFile(path: dir.file(layer + ".meta")), streamSize: tar.size, sink: sink)
                } else {
                    _ = try TarApplier(fs: fs).applyMetaOnly(stream: tar, sink: sink)
                }
                maps += sink.mappings.map { "\($0.device) \($0.length) \($0.target)" }
            }
            try fs.close()
            let ro = try Ext4Filesystem(file: disk, epoch: 1, writable: false)
            results.append((try ConvertImageTests.rows(ro), maps))
            try ro.close()
        }
        #expect(results[0].0 == results[1].0)
        #expect(results[0].1 == results[1].1 && !results[0].1.isEmpty)
    }

    /// Applies `bytes` metadata-only (tar, or tar-meta over a stream of `streamSize`) on a fresh disk.
    static func applyHostile(_ bytes: [UInt8], _ dir: TemporaryDirectory, meta: Bool = false, streamSize: UInt64 = 1 << 20) throws {
        let disk = try freshDisk(dir, "hostile-\(UInt32.random(in: 0...UInt32.max))", size: 64 << 20)
        let fs = try Ext4Filesystem(file: disk, epoch: 1)
        defer { try? fs.close() }
        let input = MemoryFile(bytes: bytes, name: "input", writable: false)
        let sink = MaterialisingMapping(target: MemoryFile(bytes: [UInt8](repeating: 0, count: Int(streamSize))), disk: disk)
        if meta {
            _ = try TarApplier(fs: fs).applyTarMeta(input, streamSize: streamSize, sink: sink)
        } else {
            _ = try TarApplier(fs: fs).applyMetaOnly(stream: input, sink: sink)
        }
    }

    static func header(_ name: String, type: UInt8 = UInt8(ascii: "0"), size: Int = 0, mode: String = "0000644") -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ at: Int) { for (k, b) in s.utf8.enumerated() { h[at + k] = b } }
        put(name, 0); put(mode, 100); put("0000000", 108); put("0000000", 116)
        put(String(repeating: "0", count: 11 - String(size, radix: 8).count) + String(size, radix: 8), 124)
        put("14000000000", 136); h[156] = type; put("ustar", 257); put("00", 263)
        for k in 148..<156 { h[k] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(repeating: "0", count: 6 - String(sum, radix: 8).count) + String(sum, radix: 8), 148)
        h[154] = 0; h[155] = 0x20
        return h
    }

    static func file(_ name: String, _ data: [UInt8]) -> [UInt8] {
        header(name, size: data.count) + data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    static func expectError(_ bytes: [UInt8], _ dir: TemporaryDirectory, meta: Bool = false, streamSize: UInt64 = 1 << 20,
                            _ check: (TarFormatError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try applyHostile(bytes, dir, meta: meta, streamSize: streamSize)
            Issue.record("no error", sourceLocation: sourceLocation)
        } catch let e as TarFormatError {
            #expect(check(e), "\(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("not a TarFormatError: \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test("hostile: truncated tars, bad checksums and fields, malformed PAX, huge extension records, sparse entries, unknown types, tar-meta offsets past the stream or misaligned, corrupt gzip")
    func hostile() throws {
        let dir = TemporaryDirectory("obd-metaonly-hostile")
        defer { dir.remove() }
        let end = [UInt8](repeating: 0, count: 1024)
        let good = Self.file("a.txt", Array("hello\n".utf8)) + Self.file("b.txt", [UInt8](repeating: 7, count: 5000)) + end
        try Self.applyHostile(good, dir)
        // Truncated: inside data, inside a header, right after an extension header.
        Self.expectError(Array(good[0..<(512 + 512 + 512 + 100)]), dir) { if case .truncated = $0 { true } else { false } }
        Self.expectError(Array(good[0..<700]), dir) { if case .truncated = $0 { true } else { false } }
        let longName = Self.header("././@LongLink", type: UInt8(ascii: "L"), size: 10) + Array("long-name\0".utf8) + [UInt8](repeating: 0, count: 502)
        Self.expectError(longName, dir) { if case .truncated = $0 { true } else { false } }
        try Self.applyHostile(longName + Self.file("x", [1]) + end, dir)
        // A corrupt checksum; a non-octal size.
        var bad = good
        bad[10] ^= 0x55
        Self.expectError(bad, dir) { if case .checksum(_, 0, _, _) = $0 { true } else { false } }
        var field = Self.header("f", size: 0)
        field[125] = UInt8(ascii: "9")
        for k in 148..<156 { field[k] = 0x20 }
        let sum = field.reduce(0) { $0 + Int($1) }
        for (k, b) in (String(repeating: "0", count: 6 - String(sum, radix: 8).count) + String(sum, radix: 8)).utf8.enumerated() { field[148 + k] = b }
        field[154] = 0
        Self.expectError(field + end, dir) { if case .badField(_, 0, "size") = $0 { true } else { false } }
        // PAX: a record whose length runs past the body; no '='; an extension record too large.
        func pax(_ body: String) -> [UInt8] {
            let b = Array(body.utf8)
            return Self.header("PaxHeaders/x", type: UInt8(ascii: "x"), size: b.count) + b + [UInt8](repeating: 0, count: (512 - b.count % 512) % 512)
        }
        Self.expectError(pax("99 path=x\n") + Self.file("x", [1]) + end, dir) { if case .badPax = $0 { true } else { false } }
        Self.expectError(pax("11 pathxyz\n") + Self.file("x", [1]) + end, dir) { if case .badPax = $0 { true } else { false } }
        Self.expectError(Self.header("big", type: UInt8(ascii: "x"), size: 64 << 20) + end, dir) {
            if case .extensionTooLarge = $0 { true } else { false }
        }
        // Sparse: GNU 'S' and PAX GNU.sparse.*; the fixture's GNU tar --sparse layer too.
        Self.expectError(Self.header("s", type: UInt8(ascii: "S")) + end, dir) { if case .sparse = $0 { true } else { false } }
        Self.expectError(pax("22 GNU.sparse.major=1\n") + Self.file("x", [1]) + end, dir) { if case .sparse = $0 { true } else { false } }
        _ = try ConvertImageTests.makeLayers(dir)
        let sparse = try LocalFile(path: dir.file("layers/sparse.tar"))
        Self.expectError(try sparse.readBytes(at: 0, count: Int(sparse.size)), dir) { if case .sparse = $0 { true } else { false } }
        Self.expectError(Self.header("v", type: UInt8(ascii: "V")) + end, dir) { if case .unsupportedType = $0 { true } else { false } }
        // tar-meta: an offset past the stream, a size running past it, a misaligned offset.
        func meta(offset: UInt64, size: Int) -> [UInt8] {
            var h = Self.header("m.txt", size: size)
            withUnsafeBytes(of: offset.littleEndian) { for k in 0..<8 { h[329 + k] = $0[k] } }
            return h
        }
        try Self.applyHostile(meta(offset: 512, size: 100), dir, meta: true, streamSize: 4096)
        Self.expectError(meta(offset: 1 << 40, size: 1), dir, meta: true, streamSize: 4096) {
            if case .dataOutOfRange(_, "m.txt", 1 << 40, 1, 4096) = $0 { true } else { false }
        }
        Self.expectError(meta(offset: 3584, size: 1000), dir, meta: true, streamSize: 4096) { if case .dataOutOfRange = $0 { true } else { false } }
        Self.expectError(meta(offset: UInt64.max - 511, size: 1000), dir, meta: true, streamSize: 4096) { if case .dataOutOfRange = $0 { true } else { false } }
        Self.expectError(meta(offset: 700, size: 10), dir, meta: true, streamSize: 4096) { if case .misaligned = $0 { true } else { false } }
        // Corrupt gzip: the index cannot be built, or (index of the good blob) reads fail.
        let gz = try LocalFile(path: dir.file("layers/update.tar.gz"))
        var blob = try gz.readBytes(at: 0, count: Int(gz.size))
        let idx = MemoryFile()
        _ = try GzipIndexWriter.write(gzip: gz, to: idx)
        blob[blob.count / 2] ^= 0xFF
        let corrupt = MemoryFile(bytes: blob, name: "corrupt.tar.gz", writable: false)
        #expect(throws: GzipError.self) { _ = try GzipIndexWriter.write(gzip: corrupt, to: MemoryFile()) }
        do {
            let g = try GzipFile(blob: corrupt, indexFile: idx)
            let disk = try Self.freshDisk(dir, "gz", size: 64 << 20)
            let fs = try Ext4Filesystem(file: disk, epoch: 1)
            defer { try? fs.close() }
            _ = try TarApplier(fs: fs).applyMetaOnly(stream: g, sink: MaterialisingMapping(target: g, disk: disk))
            Issue.record("a corrupt gzip stream applied without an error")
        } catch let e as TarFormatError {
            guard case .readFailed = e else { Issue.record("\(e)"); return }
        } catch is GzipError {
        }
    }

    @Test("Debian minbase (tar.gz + tar) metadata-only: the tree equals umoci's unpack, e2fsck -fn is clean",
          .enabled(if: DebianImageTests.present || ReferenceFiles.isCI))
    func debianMinbase() throws {
        try #require(DebianImageTests.present, "Debian minbase not found in \(DebianImageTests.cache): run tools/make-debian-rootfs.sh")
        try #require(access("/usr/bin/umoci", X_OK) == 0, "umoci is missing: run tools/install-deps.sh")
        let dir = TemporaryDirectory("obd-metaonly-debian")
        defer { dir.remove() }
        try DebianImageTests.prepareSource(dir)
        let disk = try Self.freshDisk(dir, "disk", size: 8 << 30)
        let fs = try Ext4Filesystem(file: disk, epoch: 1)
        var mapped: UInt64 = 0
        for layer in [dir.file("l1.tar.gz"), DebianImageTests.cache + "/layer2.tar"] {
            let s = try Self.stream(layer, dir)
            let sink = MaterialisingMapping(target: s, disk: disk)
            mapped += try TarApplier(fs: fs).applyMetaOnly(stream: s, sink: sink).mappedBytes
        }
        try fs.close()
        #expect(mapped > 50 << 20)
        let ro = try Ext4Filesystem(file: disk, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(ro)
        try ro.close()
        let want = try DebianImageTests.umociRows(dir)
        #expect(want.count > 3000)
        #expect(ours == want, "\(Set(ours).symmetricDifference(want).sorted().prefix(20))")
        let (rc, text) = try ApplyReferenceTests.fsck(disk, dir)
        #expect(rc == 0, "\(text)")
    }
}
