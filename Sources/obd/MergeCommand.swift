import ArgumentParser
import Image
import LSMT

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Flatten every layer of an image config (lowers and upper) into one read-only layer, like overlaybd-merge.")

    @Argument(help: "Image config (config.v1.json).") var imageConfig: String
    @Argument(help: "Output layer file.") var output: String
    @Flag(inversion: .prefixedNo, help: "ZFile-compress the output (default on: LZ4, 4 KiB, CRC, as overlaybd-merge).") var compress = true
    @Flag(name: .short, help: "Wrap the ZFile in a single-file tar.") var t = false
    @Flag(name: .short, help: "Replace an existing output.") var f = false
    @Option(name: .long, help: "UUID of the new layer (default: null UUID, as overlaybd-merge).") var uuid: String?
    @Option(name: .long, help: "Parent UUID (default: the bottom layer's parent).") var parentUUID: String?
    @Option(name: [.long, .customLong("service_config_path")], help: "Global overlaybd.json.") var config: String?
    @OptionGroup var compression: CompressionOptions

    func run() throws {
        try runReportingErrors {
            if t && !compress { throw CLIError("-t (tar wrapper) needs compression") }
            let global = try GlobalConfig.load(path: config)
            let image = try Image.open(configPath: imageConfig, global: global)
            defer { image.close() }
            let stack = image.stack
            let vsize = stack.lowers.last?.header.virtualSize ?? stack.upper?.header.virtualSize ?? 0
            let parent = stack.upper?.header.parentUUID ?? stack.lowers.first?.header.parentUUID ?? .null
            let args = CommitArgs(uuid: try uuid.map { try parseUUID($0, flag: "--uuid") },
                                  parentUUID: try parentUUID.map { try parseUUID($0, flag: "--parent-uuid") })
            try writeLayer(segments: stack.flattenedIndex(), sources: stack.flattenedFiles, virtualSize: vsize,
                           defaultParent: parent, args: args, outPath: output, force: f,
                           compress: compress ? try compression.options(overwriteHeader: false) : nil, tar: t)
        }
    }
}
