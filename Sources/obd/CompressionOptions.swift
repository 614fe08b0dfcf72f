import ArgumentParser
import ZFile

/// ZFile flags shared by commit, zfile and merge.
struct CompressionOptions: ParsableArguments {
    @Option(name: .long, help: "Compression algorithm: lz4 or zstd.") var algorithm = "lz4"
    @Option(name: .long, help: "Block size in KiB: 4, 8, 16, 32 or 64.") var bs = 4
    @Option(name: [.customLong("compress-threads"), .customLong("compress_threads")], help: "Compression threads (output is identical for any count).") var compressThreads = 1
    @Flag(name: .long, help: "Write blocks that compress to more than 64 KiB (overlaybd's reader cannot read them) with a warning instead of failing.") var allowOversizedBlocks = false

    func options(overwriteHeader: Bool, verify: Bool = true) throws -> ZFileOptions {
        guard let alg = ZFileAlgorithm(name: algorithm) else {
            throw CLIError("--algorithm: '\(algorithm)' is not lz4 or zstd")
        }
        guard [4, 8, 16, 32, 64].contains(bs) else {
            throw CLIError("--bs: \(bs) KiB is not 4, 8, 16, 32 or 64")
        }
        guard (1...256).contains(compressThreads) else {
            throw CLIError("--compress-threads: \(compressThreads) is not between 1 and 256")
        }
        return ZFileOptions(algorithm: alg, blockSize: bs * 1024, verify: verify, threads: compressThreads,
                            overwriteHeader: overwriteHeader, allowOversizedBlocks: allowOversizedBlocks)
    }
}

func warnOversized(_ writer: ZFileWriter) {
    if writer.oversizedBlocks > 0 {
        printError("obd: warning: \(writer.oversizedBlocks) block(s) compressed to more than 64 KiB; overlaybd's reader cannot read this file (obd can)")
    }
}
