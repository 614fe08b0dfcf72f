import ArgumentParser
import BlockIO
import Glibc
import Threading
import ZFile

struct ZFileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zfile",
        abstract: "Compress a file into a ZFile, decompress one (-x) or check its checksums (--verify), like overlaybd-zfile.")

    @Argument(help: "Source file (with one argument: the target, and the source is stdin).") var source: String
    @Argument(help: "Target file.") var target: String?
    @Flag(name: .short, help: "Decompress.") var x = false
    @Flag(name: .long, help: "Check every block's CRC (and that it decompresses).") var verify = false
    @Flag(name: .short, help: "Wrap the output in a single-file tar.") var t = false
    @Flag(name: .short, help: "Replace an existing target.") var f = false
    @Flag(name: .long, help: "Write no per-block CRC (overlaybd's tools always write one).") var noCrc = false
    @OptionGroup var compression: CompressionOptions

    func run() throws {
        try runReportingErrors {
            if verify {
                let (inner, layout) = try openZFile(source)
                let blocks = try inner.verifyAll()
                print("\(source): valid ZFile (\(layout)), \(blocks) blocks\(inner.verify ? ", every CRC checked" : ", no per-block CRC to check")")
                return
            }
            if x {
                guard let target else { throw CLIError("-x needs SOURCE and TARGET") }
                let (reader, _) = try openZFile(source)
                let out = try createOutput(target, force: f)
                let chunk = 4 << 20
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
                defer { buf.deallocate() }
                let progress = Progress("decompress", total: reader.size)
                var off: UInt64 = 0
                while off < reader.size {
                    let n = try reader.read(into: buf, at: off)
                    try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: off)
                    off += UInt64(n)
                    progress.update(off)
                }
                progress.finish()
                try out.flush()
                return
            }
            let input: LocalFile?
            let outPath: String
            if let target {
                input = try LocalFile(path: source)
                outPath = target
            } else {
                input = nil
                outPath = source
            }
            let out = try createOutput(outPath, force: f)
            do {
                let writer = try ZFileWriter(output: out, base: t ? TarWrapper.payloadOffset : 0,
                                             options: try compression.options(overwriteHeader: false, verify: !noCrc))
                let chunk = 4 << 20
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
                defer { buf.deallocate() }
                let progress = Progress("compress", total: input?.size ?? 0)
                var off: UInt64 = 0
                while true {
                    let n = try input?.read(into: buf, at: off) ?? readStandardInput(into: buf)
                    if n == 0 { break }
                    try writer.append(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                    off += UInt64(n)
                    progress.update(off)
                }
                try writer.finish()
                warnOversized(writer)
                if t { try TarWrapper.wrap(output: out, payloadSize: writer.compressedSize) }
                try out.flush()
                progress.finish()
            } catch {
                unlink(outPath)
                throw error
            }
        }
    }
}

/// Opens `path` as a ZFile, peeling a tar wrapper if there is one.
func openZFile(_ path: String) throws -> (ZFileReader, String) {
    var file: any BlockFile = try LocalFile(path: path)
    var layout = "zfile"
    if let payload = try TarWrapper.unwrap(file) {
        file = payload
        layout = "tar > zfile"
    }
    guard try ZFileReader.isZFile(file) else { throw CLIError("\(path): not a ZFile") }
    return (try ZFileReader(source: file), layout)
}

/// Fills `buf` from standard input; returns fewer bytes only at end of input.
func readStandardInput(into buf: UnsafeMutableRawBufferPointer) throws -> Int {
    var done = 0
    while done < buf.count {
        let n = retryingInterrupted { Glibc.read(0, buf.baseAddress! + done, buf.count - done) }
        if n < 0 {
            throw CLIError("stdin: read failed: \(BlockIOError.text(errno))")
        }
        if n == 0 { break }
        done += n
    }
    return done
}
