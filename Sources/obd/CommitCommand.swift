import ArgumentParser
import BlockIO
import LSMT
import ZFile
import Glibc

struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit",
        abstract: "Commit a writable layer into a read-only layer (optionally ZFile-compressed and tar-wrapped), like overlaybd-commit.",
        discussion: """
            obd commit [options] DATA INDEX OUTPUT      commit a writable layer
            obd commit --seal DATA INDEX                seal the data file in place
            obd commit --commit-sealed SEALED OUTPUT    compact a sealed layer
            obd commit --turbo-oci FSMETA INDEX OUTPUT  commit a TurboOCI warp layer (index not padded, \
            tag-1 entries kept; uuid and parent only from the options)
            """)

    @Argument(help: "Data file, index file and output (see above).") var files: [String]
    @Option(name: .short, help: "Commit message (at most 256 bytes).") var message: String?
    @Option(name: .long, help: "UUID of the new layer (default: null UUID).") var uuid: String?
    @Option(name: [.short, .customLong("parent-uuid")], help: "Parent UUID (default: the source's parent).") var parentUUID: String?
    @Flag(name: .short, help: "Compress with ZFile (CRC on, header rewritten).") var z = false
    @Flag(name: .short, help: "Wrap the ZFile in a single-file tar (needs -z).") var t = false
    @Flag(name: .short, help: "Replace an existing output.") var f = false
    @Flag(name: .long, help: "Seal DATA in place instead of writing a new file.") var seal = false
    @Flag(name: [.customLong("commit-sealed"), .customLong("commit_sealed")], help: "DATA is a sealed layer; compact it into OUTPUT.") var commitSealed = false
    @Flag(name: [.customLong("turbo-oci"), .customLong("turboOCI"), .customLong("fastoci")],
          help: "DATA INDEX is a TurboOCI warp layer (obd create --turbo-oci).") var turboOCI = false
    @OptionGroup var compression: CompressionOptions

    func run() throws {
        try runReportingErrors {
            if t && !z { throw CLIError("-t (tar wrapper) needs -z") }
            if seal && commitSealed { throw CLIError("--seal and --commit-sealed exclude each other") }
            let args = CommitArgs(
                uuid: try uuid.map { try parseUUID($0, flag: "--uuid") },
                parentUUID: try parentUUID.map { try parseUUID($0, flag: "--parent-uuid") },
                message: Array((message ?? "").utf8))
            if seal {
                guard files.count == 2 else { throw CLIError("--seal takes DATA INDEX") }
                let layer = try WritableLayer.open(dataPath: files[0], indexPath: files[1])
                try layer.seal()
                return
            }
            if turboOCI {
                guard !commitSealed, files.count == 3 else { throw CLIError("--turbo-oci takes FSMETA INDEX OUTPUT") }
                let warp = try WritableWarpLayer.open(indexPath: files[1], fsmetaPath: files[0], writable: false)
                try writeOutput(outPath: files[2], force: f, compress: z ? try compression.options(overwriteHeader: true) : nil, tar: t,
                                total: warp.segments.reduce(0) { $0 + ($1.zeroed || $1.tag != 0 ? 0 : UInt64($1.length) * 512) }) { sink, progress in
                    try warp.commit(args: args, into: sink, progress: progress)
                }
                return
            }
            let segments: [Segment]
            let source: any BlockFile
            let header: LSMTHeader
            let outPath: String
            if commitSealed {
                guard files.count == 2 else { throw CLIError("--commit-sealed takes SEALED OUTPUT") }
                let layer = try ReadOnlyLayer(file: LocalFile(path: files[0]))
                segments = layer.segments
                source = layer.file
                header = layer.header
                outPath = files[1]
            } else {
                guard files.count == 3 else { throw CLIError("commit takes DATA INDEX OUTPUT") }
                let layer = try WritableLayer.open(dataPath: files[0], indexPath: files[1], writable: false)
                segments = layer.segments.map { var s = $0; s.tag = 0; return s }
                source = layer.dataFile
                header = layer.header
                outPath = files[2]
            }
            try writeLayer(segments: segments, sources: [source], virtualSize: header.virtualSize,
                           defaultParent: header.parentUUID, args: args, outPath: outPath, force: f,
                           compress: z ? try compression.options(overwriteHeader: true) : nil, tar: t)
        }
    }
}

/// Writes a committed layer to `outPath`, plain or through a ZFile writer (and tar wrapper).
func writeLayer(segments: [Segment], sources: [any BlockFile], virtualSize: UInt64, defaultParent: LayerUUID,
                args: CommitArgs, outPath: String, force: Bool, compress: ZFileOptions?, tar: Bool) throws {
    let total = segments.reduce(UInt64(0)) { $0 + ($1.zeroed ? 0 : UInt64($1.length) * 512) }
    try writeOutput(outPath: outPath, force: force, compress: compress, tar: tar, total: total) { sink, progress in
        try LayerCommit.write(segments: segments, sources: sources, virtualSize: virtualSize,
                              defaultParent: defaultParent, args: args, into: sink, progress: progress)
    }
}

/// Runs `commit` into `outPath`, plain or through a ZFile writer (and tar wrapper), with
/// progress over `total` bytes; on failure the partial output is removed.
func writeOutput(outPath: String, force: Bool, compress: ZFileOptions?, tar: Bool, total: UInt64,
                 _ commit: (any AppendSink, @escaping (UInt64) -> Void) throws -> Void) throws {
    let out = try createOutput(outPath, force: force)
    do {
        let progress = Progress("commit \(outPath)", total: total)
        if let compress {
            let base = tar ? TarWrapper.payloadOffset : 0
            let writer = try ZFileWriter(output: out, base: base, options: compress)
            try commit(writer, progress.update)
            warnOversized(writer)
            if tar { try TarWrapper.wrap(output: out, payloadSize: writer.compressedSize) }
        } else {
            try commit(FileAppendSink(file: out, syncOnFinish: false), progress.update)
        }
        try out.flush()
        progress.finish()
    } catch {
        unlink(outPath)
        throw error
    }
}
