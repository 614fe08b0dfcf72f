import BlockIO
import FoundationEssentials
import Image
import LSMT
import Testing
import TestSupport
import Trace

/// The README's "Expected virtual-disk content" table: every stack that must produce each disk.
@Suite("Reference stacks", .enabled(if: ReferenceFiles.shouldRun), .serialized)
struct ReferenceStackTests {
    static let mkfs = ("b43738658059c5883e164e2fdf113e5f36efe4a7604a516fa6374641bce95222", "55f0aee989c3d3fc8cd5e2a1cf816c6836daa468d6b425034f52a6ffc49991ca")
    static let layer1 = ("928b572f6c5682eb9c646d0de888212aef8c7ace39b25a0f1cd37b898241fa39", "43bb443e47a538f70c3e8b711915b895a2fb678dbcdeca73d08146ce59269ce9")
    static let layer12 = ("af3aaf93cf13d1483f27b95e7f0fd9300e24903e77cd5d7ee72842906e418121", "c60370da6c2ad94a093e3b0727ccfa944579e62295b340b9e036cda6e3915cef")
    static let layer2 = ("77a852b9ffb6144ff613e64cabdf40b72c2446772c4b77ee7e3d1ed207b506fe", "52376f8d327a1e424fb47d8cfa65200b806ce775309743faacb9676da882e7b3")

    struct Case: Sendable, CustomTestStringConvertible {
        var lowers: [String]
        var upper: (String, String)?
        var expected: (String, String)
        var testDescription: String { (lowers + (upper.map { ["upper " + $0.0] } ?? [])).joined(separator: " + ") }
    }

    static let cases: [Case] = [
        Case(lowers: [], upper: ("l1/writable_data.after-create", "l1/writable_index.after-create"), expected: mkfs),
        Case(lowers: [], upper: ("l1/writable_data", "l1/writable_index"), expected: layer1),
        Case(lowers: ["l1/layer1.commit"], expected: layer1),
        Case(lowers: ["l1/layer1.commit.lz4.zfile"], expected: layer1),
        Case(lowers: ["l1/layer1.commit.lz4.zfile.tar"], expected: layer1),
        Case(lowers: ["l1/layer1.commit.zstd-bs16.zfile"], expected: layer1),
        Case(lowers: ["l1/layer1.commit", "l2/layer2.commit"], expected: layer12),
        Case(lowers: ["l1/layer1.commit.lz4.zfile", "l2/layer2.commit.lz4.zfile"], expected: layer12),
        Case(lowers: ["l1/layer1.commit.lz4.zfile.tar", "l2/layer2.commit"], expected: layer12),
        Case(lowers: ["l1/layer1.commit.lz4.zfile.tar", "l2/layer2.commit.lz4.zfile"], expected: layer12),
        Case(lowers: ["l1/layer1.commit.zstd-bs16.zfile", "l2/layer2.commit"], expected: layer12),
        Case(lowers: ["l1/layer1.commit.zstd-bs16.zfile", "l2/layer2.commit.lz4.zfile"], expected: layer12),
        Case(lowers: ["l1/layer1.commit.lz4.zfile"], upper: ("l2/writable_data", "l2/writable_index"), expected: layer12),
        Case(lowers: ["merged/merged.lz4.zfile"], expected: layer12),
        Case(lowers: ["l2/layer2.commit"], expected: layer2),
        Case(lowers: [], upper: ("l2/writable_data", "l2/writable_index"), expected: layer2),
    ]

    @Test("each stack combination reads back as its 1 GiB disk", arguments: cases)
    func stack(c: Case) throws {
        let root = try ReferenceFiles.path("lsmt")
        var config = ImageConfig()
        config.lowers = c.lowers.map { ImageConfig.Lower(file: root + "/" + $0) }
        if let (d, i) = c.upper { config.upper = ImageConfig.Upper(index: root + "/" + i, data: root + "/" + d) }
        let image = try Image(config: config)
        let disk = image.stack
        #expect(disk.size == 1 << 30)
        let first = try Digest.sha256(size: 4 << 20) { try disk.read(into: $0, at: $1) }
        #expect(first == c.expected.1)
        let full = try Digest.sha256(size: disk.size) { try disk.read(into: $0, at: $1) }
        #expect(full == c.expected.0)
    }

    @Test("ioEngine 1 (libaio, O_DIRECT) reads the same disk")
    func libaioEngine() throws {
        let root = try ReferenceFiles.path("lsmt")
        var config = ImageConfig()
        config.lowers = [ImageConfig.Lower(file: root + "/l1/layer1.commit.lz4.zfile.tar"), ImageConfig.Lower(file: root + "/l2/layer2.commit")]
        var global = GlobalConfig()
        global.ioEngine = 1
        let disk = try Image(config: config, global: global).stack
        // The layer file LSMT reads is the trace-recording decorator over the AIO file.
        #expect((disk.lowers[1].file as? TracingFile)?.inner is AIOFile)
        let full = try Digest.sha256(size: disk.size) { try disk.read(into: $0, at: $1) }
        #expect(full == Self.layer12.0)
    }

    @Test("the 2021 base layer: its disk's first 256 MiB")
    func baseLayer() throws {
        var config = ImageConfig()
        config.lowers = [ImageConfig.Lower(file: try ReferenceFiles.path("base/ext4_64"))]
        let disk = try Image(config: config).stack
        #expect(disk.size == 68_719_476_736)
        let h = try Digest.sha256(size: 256 << 20) { try disk.read(into: $0, at: $1) }
        #expect(h == "1d2061503d67d530d11615ca84469d95ce9fccd97c88308f49c05086e017919a")
    }

    @Test("configs with relative paths open from their folder; resultFile is written in a copy")
    func relativeConfig() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let root = try ReferenceFiles.path("lsmt")
        // Copy the l2 folder's writable pair and layer 1 into a temp folder tree.
        for (src, dst) in [("l1/layer1.commit.lz4.zfile", "l1/layer1.commit.lz4.zfile"),
                           ("l2/writable_data", "l2/writable_data"), ("l2/writable_index", "l2/writable_index"),
                           ("l2/config.v1.json", "l2/config.v1.json")] {
            _ = run(["/bin/mkdir", "-p", dir.path + "/l1", dir.path + "/l2"])
            #expect(run(["/bin/cp", root + "/" + src, dir.path + "/" + dst]).status == 0)
        }
        let config = try ImageConfig.load(path: dir.path + "/l2/config.v1.json")
        #expect(config.resolve(config.upper.data) == dir.path + "/l2/writable_data")
        let image = try Image(config: config, writable: true)
        let h = try Digest.sha256(size: 4 << 20) { try image.stack.read(into: $0, at: $1) }
        #expect(h == Self.layer12.1)
        try Image.writeResult(config: config, error: nil)
        #expect(readText(dir.path + "/l2/result") == "success")
    }
}
