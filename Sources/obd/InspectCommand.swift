import ArgumentParser
import BlockIO
import FoundationEssentials
import Image
import LSMT
import ZFile

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a layer's headers, index statistics and ZFile block statistics.",
        discussion: "A read-only layer (plain, ZFile or tar-wrapped) takes one file; a writable layer takes DATA INDEX.")

    @Argument(help: "Layer file, or the data and index files of a writable layer.") var files: [String]
    @Flag(name: .long, help: "Print JSON.") var json = false
    @Flag(name: .long, help: "Print only the index, one 'offset length moffset zeroed tag' line per mapping (sectors).") var index = false

    func run() throws {
        try runReportingErrors {
            guard (1...2).contains(files.count) else { throw CLIError("inspect takes FILE, or DATA INDEX of a writable layer") }
            var report = InspectReport(file: files[0])
            let raw = try LocalFile(path: files[0])
            let (inner, layout) = try LayerOpener.unwrap(raw)
            report.layout = layout.description
            if layout.zfile, let z = inner as? ZFileReader { report.zfile = ZFileInfo(z) }
            let header = try LSMTHeader.read(from: inner, at: 0)
            let segments: [Segment]
            let vsize: UInt64
            if files.count == 2 || isWritable(inner, header) {
                let layer = try WritableLayer.open(dataPath: files[0], indexPath: files.count == 2 ? files[1] : nil, writable: false)
                segments = layer.segments
                vsize = layer.virtualSize
                report.layout = layer.mode == .sparse ? "lsmt writable (sparse)" : "lsmt writable (append-only)"
                report.lsmt = LSMTInfo(header: layer.header, trailer: nil, segments: segments, stored: nil)
            } else {
                let layer = try ReadOnlyLayer(file: inner)
                segments = layer.segments
                vsize = layer.virtualSize
                report.lsmt = LSMTInfo(header: layer.header, trailer: layer.trailer, segments: segments, stored: layer.storedEntryCount)
            }
            if index {
                var text = "# vsize \(vsize)\n# segments: \(segments.count) (units: 512-byte sectors)\n# offset length moffset zeroed tag\n"
                for s in segments { text += "\(s.offset) \(s.length) \(s.moffset) \(s.zeroed ? 1 : 0) 0\n" }
                print(text, terminator: "")
                return
            }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(report), as: UTF8.self))
            } else {
                print(report.text)
            }
        }
    }

    private func isWritable(_ file: any BlockFile, _ header: LSMTHeader) -> Bool {
        guard header.flags.contains(.isDataFile) else { return false }
        let size = file.size
        guard size >= 8192, let t = try? LSMTHeader.read(from: file, at: size - 4096) else { return true }
        return t.flags.contains(.isHeader) || !t.flags.contains(.sealed)
    }
}

struct InspectReport: Encodable {
    var file: String
    var layout = ""
    var zfile: ZFileInfo?
    var lsmt: LSMTInfo?

    init(file: String) { self.file = file }

    var text: String {
        var lines = ["file: \(file)", "layout: \(layout)"]
        if let z = zfile {
            lines += ["zfile:",
                      "  header flags: 0x\(String(z.headerFlags, radix: 16))\(z.headerRewritten ? " (rewritten with index fields)" : "")",
                      "  algorithm: \(z.algorithm), block size: \(z.blockSize), per-block CRC: \(z.verify ? "yes" : "no")",
                      "  blocks: \(z.blocks), original size: \(z.originalSize), compressed data: \(z.compressedBytes) (ratio \(String(format2: z.ratio)))",
                      "  stored block length: min \(z.minStored), max \(z.maxStored), mean \(String(format2: z.meanStored))",
                      "  blocks over 64 KiB (unreadable by overlaybd): \(z.oversizedBlocks)",
                      "  index offset: \(z.indexOffset), index CRC: 0x\(String(z.indexCRC, radix: 16))"]
        }
        if let l = lsmt {
            lines += ["lsmt:",
                      "  header flags: 0x\(String(l.headerFlags, radix: 16))" + (l.trailerFlags.map { ", trailer flags: 0x\(String($0, radix: 16))" } ?? ""),
                      "  virtual size: \(l.virtualSize)",
                      "  uuid: \(l.uuid)", "  parent uuid: \(l.parentUUID)", "  message: \(l.message)",
                      "  index: \(l.entries) mappings" + (l.storedEntries.map { " (\($0) stored with padding)" } ?? ""),
                      "  data mappings: \(l.dataSegments) (\(l.dataBytes) bytes), zeroed mappings: \(l.zeroedSegments) (\(l.zeroedBytes) bytes)",
                      "  longest mapping: \(l.longestSegment) sectors"]
        }
        return lines.joined(separator: "\n")
    }
}

struct ZFileInfo: Encodable {
    var headerFlags: UInt64, headerRewritten: Bool, algorithm: String, blockSize: Int, verify: Bool
    var blocks: Int, originalSize: UInt64, compressedBytes: UInt64, ratio: Double
    var minStored: Int, maxStored: Int, meanStored: Double, oversizedBlocks: Int
    var indexOffset: UInt64, indexCRC: UInt32

    init(_ z: ZFileReader) {
        headerFlags = z.header.flags.rawValue
        headerRewritten = z.header.flags.contains(.headerOverwrite)
        algorithm = z.algorithm.description
        blockSize = z.blockSize
        verify = z.verify
        blocks = z.table.blockCount
        originalSize = z.size
        var lo = Int.max, hi = 0, over = 0
        for i in 0..<blocks {
            let n = z.storedLength(i)
            lo = min(lo, n); hi = max(hi, n)
            if n > 65536 { over += 1 }
        }
        compressedBytes = blocks > 0 ? z.table.offset(blocks) - z.table.offset(0) : 0
        ratio = compressedBytes > 0 ? Double(originalSize) / Double(compressedBytes) : 0
        minStored = blocks > 0 ? lo : 0
        maxStored = hi
        meanStored = blocks > 0 ? Double(compressedBytes) / Double(blocks) : 0
        oversizedBlocks = over
        indexOffset = z.record.indexOffset
        indexCRC = z.record.indexCRC
    }
}

struct LSMTInfo: Encodable {
    var headerFlags: UInt32, trailerFlags: UInt32?, virtualSize: UInt64
    var uuid: String, parentUUID: String, message: String
    var entries: Int, storedEntries: UInt64?
    var dataSegments = 0, zeroedSegments = 0, dataBytes: UInt64 = 0, zeroedBytes: UInt64 = 0, longestSegment: UInt32 = 0

    init(header: LSMTHeader, trailer: LSMTHeader?, segments: [Segment], stored: UInt64?) {
        headerFlags = header.flags.rawValue
        trailerFlags = trailer?.flags.rawValue
        virtualSize = (trailer ?? header).virtualSize
        uuid = header.uuid.description
        parentUUID = header.parentUUID.description
        message = header.message
        entries = segments.count
        storedEntries = stored
        for s in segments {
            if s.zeroed { zeroedSegments += 1; zeroedBytes += UInt64(s.length) * 512 }
            else { dataSegments += 1; dataBytes += UInt64(s.length) * 512 }
            longestSegment = max(longestSegment, s.length)
        }
    }
}

extension String {
    init(format2 v: Double) {
        let scaled = (v * 100).rounded() / 100
        self = "\(scaled)"
    }
}
