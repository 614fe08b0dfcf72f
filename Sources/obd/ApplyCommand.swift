import ArgumentParser
import BlockIO
import Convert
import Ext4
import Hashing
import Image
import LSMT
import Registry

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Apply an OCI layer tar (plain, gzip or zstd) to the ext4 inside an image's upper layer, like overlaybd-apply.",
        discussion: """
            The image config must have an upper (writable) layer; the lowers are what the layer \
            applies on top of. Whiteouts delete from the lowers. Runs without root: the ext4 is \
            written in userspace (libext2fs). --mkfs first makes an empty ext4 over the whole disk.
            """)

    @Argument(help: "Layer tar, tar.gz or tar.zst (with --turbo-oci: tar or tar.gz; with --import: a tar-meta file).") var input: String
    @Argument(help: "Image config (config.v1.json) with an upper layer (with --export: the tar-meta file to write).") var imageConfig: String
    @Flag(name: [.customLong("turbo-oci"), .customLong("turboOCI")], help: "TurboOCI, as turboOCI-apply: metadata only (with --export: write the tar-meta of INPUT).") var turboOCI = false
    @Flag(name: .long, help: "With --turbo-oci: write INPUT's tar-meta (header blocks, data offsets in devmajor) to the second argument; no image.") var export = false
    @Option(name: [.customLong("gz-index-path"), .customLong("gz_index_path")], help: "With --turbo-oci: where the gzip index of a gzip INPUT goes (default: in memory).") var gzIndexPath: String?
    @Flag(name: .long, help: "Make an empty ext4 first (the bottom layer of an image).") var mkfs = false
    @Option(name: .long, help: "File system UUID for --mkfs (default: derived from the disk size).") var uuid: String?
    @Option(name: .long, help: "Seconds since 1970 for times libext2fs would take from the clock (default 0).") var epoch: Int64 = 0
    @Option(name: .long, help: "Expected sha256:<hex> of the input file.") var checksum: String?
    @Option(name: .long, help: "Global overlaybd.json (default: /etc/overlaybd/overlaybd.json if it exists).") var config: String?

    func run() throws {
        try runReportingErrors {
            if export {
                guard turboOCI else { throw CLIError("--export needs --turbo-oci") }
                let (stream, _) = try TurboTarget.open(LocalFile(path: input), indexPath: gzIndexPath)
                let out = try LocalFile(path: imageConfig, mode: .createTruncate)
                let (entries, bytes) = try TarMeta.export(stream: stream, to: out)
                try out.flush()
                print("exported \(entries) entries (\(bytes) bytes of tar-meta) from \(input) to \(imageConfig)")
                return
            }
            let global = try GlobalConfig.load(path: config)
            if turboOCI {
                try applyTurbo(global: global)
                return
            }
            let image = try Image.open(configPath: imageConfig, global: global, writable: true)
            defer { image.close() }
            guard image.stack.isWritable else { throw CLIError("\(imageConfig): needs an 'upper' layer to write into") }
            if mkfs {
                try Ext4Maker.make(on: image.stack, uuid: try uuid.map { try parseUUID($0, flag: "--uuid").description }
                                       ?? MkfsCommand.defaultUUID(size: image.stack.size),
                                   epoch: epoch, scratch: Paths.directory(of: imageConfig))
            }
            let fs = try Ext4Filesystem(file: image.stack, epoch: epoch)
            let result = try TarApplier(fs: fs).apply(LocalFile(path: input))
            if let checksum, checksum != result.digest {
                throw CLIError("\(input): sha256 is \(result.digest), expected \(checksum); the upper layer was written and must be discarded")
            }
            try fs.close()
            try image.stack.flush()
            print("applied \(result.entries) entries (\(result.whiteouts) whiteouts, \(result.bytes) data bytes) from \(input) [\(result.digest)]")
        }
    }
}

extension ApplyCommand {
    /// `--turbo-oci` (turboOCI-apply): the config's upper is a warp layer (`obd create
    /// --turbo-oci`: `data` = fsmeta, `index`); INPUT (or `upper.target`) is its target.
    /// The entries go into the ext4 over the lowers, metadata only; each regular file's
    /// data becomes a tag-1 mapping into the target's uncompressed stream.
    func applyTurbo(global: GlobalConfig) throws {
        var cfg = try ImageConfig.load(path: imageConfig)
        let upper = cfg.upper
        guard !upper.data.isEmpty, !upper.index.isEmpty else { throw CLIError("\(imageConfig): --turbo-oci needs an 'upper' warp layer (data = fsmeta, index)") }
        cfg.upper = ImageConfig.Upper()
        let targetPath = upper.target.isEmpty ? input : cfg.resolve(upper.target)
        let indexPath = gzIndexPath ?? (upper.gzipIndex.isEmpty ? nil : cfg.resolve(upper.gzipIndex))
        let targetFile = try LocalFile(path: targetPath)
        if let checksum {
            let digest = try SHA256Stream.digest(of: targetFile)
            guard digest == checksum else { throw CLIError("\(targetPath): sha256 is \(digest), expected \(checksum)") }
        }
        let (stream, _) = try TurboTarget.open(targetFile, indexPath: indexPath)
        let lowers = try Image(config: cfg, global: global)
        defer { lowers.close() }
        let warp = try WritableWarpLayer.open(indexPath: cfg.resolve(upper.index), fsmetaPath: cfg.resolve(upper.data),
                                              target: stream, base: cfg.lowers.isEmpty ? nil : lowers.stack)
        if mkfs {
            try Ext4Maker.make(on: warp, uuid: try uuid.map { try parseUUID($0, flag: "--uuid").description }
                                   ?? MkfsCommand.defaultUUID(size: warp.size),
                               epoch: epoch, scratch: Paths.directory(of: imageConfig))
        }
        let fs = try Ext4Filesystem(file: warp, epoch: epoch)
        let r = try TarApplier(fs: fs).applyMetaOnly(stream: stream, sink: warp)
        try fs.close()
        try warp.flush()
        print("applied \(r.entries) entries metadata-only (\(r.whiteouts) whiteouts, \(r.files) files, \(r.mappedBytes) bytes mapped to \(targetPath))")
    }
}

struct MkfsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mkfs",
        abstract: "Make an empty ext4 (overlaybd's userspace profile) on an image's disk, without root.")

    @Argument(help: "Image config (config.v1.json) with an upper layer.") var imageConfig: String
    @Option(name: .long, help: "File system UUID, also the directory hash seed (default: derived from the disk size).") var uuid: String?
    @Option(name: .long, help: "Seconds since 1970 for the superblock times (default 0).") var epoch: Int64 = 0
    @Option(name: .long, help: "Global overlaybd.json.") var config: String?

    static func defaultUUID(size: UInt64) -> String {
        let hex = SHA256Hex.of(Array("obd-mkfs:\(size)".utf8))
        let h = Array(hex.prefix(32))
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
    }

    func run() throws {
        try runReportingErrors {
            let image = try Image.open(configPath: imageConfig, global: GlobalConfig.load(path: config), writable: true)
            defer { image.close() }
            guard image.stack.isWritable else { throw CLIError("\(imageConfig): needs an 'upper' layer to write into") }
            let id = try uuid.map { try parseUUID($0, flag: "--uuid").description } ?? Self.defaultUUID(size: image.stack.size)
            try Ext4Maker.make(on: image.stack, uuid: id, epoch: epoch, scratch: Paths.directory(of: imageConfig))
            try image.stack.flush()
        }
    }
}
