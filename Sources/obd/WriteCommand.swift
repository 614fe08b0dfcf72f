import ArgumentParser
import Glibc
import BlockIO
import Image

struct WriteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write",
        abstract: "Write a raw file into an image's writable layer at a byte offset (like dd onto the virtual disk).",
        discussion: "Only the 4 KiB blocks whose content differs from what the disk already reads are written, so writing a modified copy of a disk image stores just the changes.")

    @Argument(help: "Image config (config.v1.json) with an upper layer.") var imageConfig: String
    @Argument(help: "Raw input file.") var input: String
    @Option(name: .long, help: "Byte offset on the virtual disk (multiple of 512).") var offset: UInt64 = 0
    @Option(name: .long, help: "Global overlaybd.json.") var config: String?

    func run() throws {
        try runReportingErrors {
            let global = try GlobalConfig.load(path: config)
            let image = try Image.open(configPath: imageConfig, global: global, writable: true)
            defer { image.close() }
            let disk = image.stack
            guard disk.isWritable else { throw CLIError("\(imageConfig): the image has no writable upper layer") }
            guard offset % 512 == 0 else { throw CLIError("--offset \(offset) is not a multiple of 512") }
            let source = try LocalFile(path: input)
            guard offset <= disk.size, source.size <= disk.size - offset else {
                throw CLIError("\(input): \(source.size) bytes at offset \(offset) do not fit on the \(disk.size)-byte disk")
            }
            let block = 4096
            let chunk = 1 << 20
            let src = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            let cur = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { src.deallocate(); cur.deallocate() }
            let progress = Progress("write", total: source.size)
            var pos: UInt64 = 0
            var written: UInt64 = 0
            while pos < source.size {
                var n = try source.read(into: src, at: pos)
                if n % 512 != 0 {
                    // Pad the tail to a whole sector with zeros.
                    let padded = (n + 511) / 512 * 512
                    UnsafeMutableRawBufferPointer(rebasing: src[n..<padded]).initializeMemory(as: UInt8.self, repeating: 0)
                    n = padded
                }
                _ = try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: cur[0..<n]), at: offset + pos)
                var b = 0
                while b < n {
                    let e = min(b + block, n)
                    if memcmp(src.baseAddress! + b, cur.baseAddress! + b, e - b) != 0 {
                        // Extend over the following changed blocks and write them at once.
                        var run = e
                        while run < n {
                            let re = min(run + block, n)
                            if memcmp(src.baseAddress! + run, cur.baseAddress! + run, re - run) == 0 { break }
                            run = re
                        }
                        try disk.write(UnsafeRawBufferPointer(rebasing: src[b..<run]), at: offset + pos + UInt64(b))
                        written += UInt64(run - b)
                        b = run
                    } else {
                        b = e
                    }
                }
                pos += UInt64(n)
                progress.update(pos)
            }
            try disk.flush()
            progress.finish()
            print("wrote \(written) of \(source.size) bytes (unchanged blocks skipped)")
        }
    }
}
