import ArgumentParser
import BlockIO
import Glibc
import Image
import LSMT
import Threading

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the virtual disk of an image config to a raw file (sparse where the disk has holes) or stdout.")

    @Argument(help: "Image config (config.v1.json).") var imageConfig: String
    @Option(name: .short, help: "Output raw file, or - for stdout.") var output: String
    @Option(name: .long, help: "Global overlaybd.json (default: /etc/overlaybd/overlaybd.json if it exists).") var config: String?

    func run() throws {
        try runReportingErrors {
            let global = try GlobalConfig.load(path: config)
            let image = try Image.open(configPath: imageConfig, global: global)
            let disk = image.stack
            let chunk = 4 << 20
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { buf.deallocate() }
            let progress = Progress("export", total: disk.size)
            if output == "-" {
                var off: UInt64 = 0
                while off < disk.size {
                    let n = try disk.read(into: buf, at: off)
                    var done = 0
                    while done < n {
                        let w = retryingInterrupted { Glibc.write(1, buf.baseAddress! + done, n - done) }
                        if w < 0 {
                            throw CLIError("stdout: write failed: \(BlockIOError.text(errno))")
                        }
                        done += w
                    }
                    off += UInt64(n)
                    progress.update(off)
                }
            } else {
                let out = try LocalFile(path: output, mode: .createTruncate)
                for extent in dataExtents(disk.flattenedIndex()) {
                    var off = extent.lowerBound
                    while off < min(extent.upperBound, disk.size) {
                        let n = Int(min(UInt64(chunk), extent.upperBound - off))
                        let got = try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]), at: off)
                        try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<got]), at: off)
                        off += UInt64(max(got, 1))
                        progress.update(off)
                    }
                }
                try out.truncate(to: disk.size)
                try out.flush()
            }
            progress.finish()
            image.close()
        }
    }
}

/// Byte ranges holding data (zeroed extents and holes left out), adjacent ones joined.
func dataExtents(_ segments: [Segment]) -> [Range<UInt64>] {
    var out: [Range<UInt64>] = []
    for s in segments where !s.zeroed {
        let r = (s.offset * 512)..<(s.end * 512)
        if let last = out.last, last.upperBound == r.lowerBound {
            out[out.count - 1] = last.lowerBound..<r.upperBound
        } else {
            out.append(r)
        }
    }
    return out
}
