import BlockIO

/// A read-only LSMT layer: `header | data | index (padded to 256 entries) | trailer`.
/// The file may be a ZFile reader or any other `BlockFile`.
public final class ReadOnlyLayer: Sendable {
    /// Most entries a read-only index may have (overlaybd's limit).
    public static let maxIndexSize: UInt64 = 1_000_000

    public let file: any BlockFile
    public let header: LSMTHeader
    public let trailer: LSMTHeader
    /// Valid index entries in order, tags cleared.
    public let segments: [Segment]
    /// Entries on disk, padding included.
    public let storedEntryCount: UInt64

    public var virtualSize: UInt64 { trailer.virtualSize }
    public var name: String { file.name }

    public init(file: any BlockFile) throws {
        self.file = file
        let name = file.name
        let r = try ReadOnlyLayer.records(of: file)
        header = r.header
        trailer = r.trailer
        let count = r.trailer.indexSize
        let indexOffset = r.trailer.indexOffset
        storedEntryCount = count
        let raw = try file.readBytes(at: indexOffset, count: Int(16 * count))
        let limit = indexOffset / 512
        var segs: [Segment] = []
        segs.reserveCapacity(Int(count))
        try raw.withUnsafeBytes { b in
            for i in 0..<Int(count) {
                var s = Segment.load(from: b, at: i * 16)
                if s.isInvalid { continue }
                s.tag = 0
                try ReadOnlyLayer.check(s, index: i, limit: limit, previous: segs.last, name: name)
                segs.append(s)
            }
        }
        segments = segs
    }

    /// A layer over `file` whose index was read and checked elsewhere (a warp layer's
    /// identity view, `WarpLayer`).
    init(file: any BlockFile, header: LSMTHeader, trailer: LSMTHeader, segments: [Segment], storedEntryCount: UInt64) {
        self.file = file
        self.header = header
        self.trailer = trailer
        self.segments = segments
        self.storedEntryCount = storedEntryCount
    }

    /// Reads and checks the header and trailer of a read-only layer file (opening checks
    /// 1 to 4 of `formats/LSMT.md` section 6): the index lies between them and has at most
    /// `maxIndexSize` entries.
    static func records(of file: any BlockFile) throws -> (header: LSMTHeader, trailer: LSMTHeader) {
        let name = file.name
        let size = file.size
        guard size >= UInt64(2 * LSMTHeader.recordSize) else {
            throw LSMTError.corrupt(name: name, detail: "file of \(size) bytes is too short for a header and a trailer")
        }
        let header = try LSMTHeader.read(from: file, at: 0)
        guard header.flags.contains(.isHeader) else {
            throw LSMTError.notLSMT(name: name, detail: "the record at offset 0 is not a header")
        }
        let trailerOffset = size - UInt64(LSMTHeader.recordSize)
        let trailer: LSMTHeader
        do {
            trailer = try LSMTHeader.read(from: file, at: trailerOffset)
        } catch LSMTError.notLSMT {
            throw LSMTError.notLSMT(name: name, detail: "no trailer at offset \(trailerOffset): not a read-only (committed or sealed) layer")
        }
        guard !trailer.flags.contains(.isHeader), trailer.flags.contains(.isDataFile), trailer.flags.contains(.sealed) else {
            throw LSMTError.notLSMT(name: name, detail: "trailer flags 0x\(String(trailer.flags.rawValue, radix: 16)) are not those of a sealed data trailer")
        }
        let count = trailer.indexSize
        guard count <= ReadOnlyLayer.maxIndexSize else {
            throw LSMTError.corrupt(name: name, detail: "index has \(count) entries, more than the limit \(ReadOnlyLayer.maxIndexSize)")
        }
        let indexOffset = trailer.indexOffset
        guard indexOffset >= UInt64(LSMTHeader.recordSize), indexOffset <= trailerOffset,
              16 * count <= trailerOffset - indexOffset else {
            throw LSMTError.corrupt(name: name, detail: "index [\(indexOffset), +\(16 * count)) does not fit between the header and the trailer at \(trailerOffset)")
        }
        return (header, trailer)
    }

    /// Structural checks of one entry: non-empty, ordered after `previous`, data inside the file.
    static func check(_ s: Segment, index i: Int, limit: UInt64, previous: Segment?, name: String) throws {
        guard s.length > 0 else {
            throw LSMTError.corrupt(name: name, detail: "index entry \(i) has length 0")
        }
        if let p = previous, p.end > s.offset {
            throw LSMTError.corrupt(name: name, detail: "index entry \(i) (\(s)) overlaps or precedes the entry before it (\(p))")
        }
        guard s.moffset >= 8, s.mend <= limit else {
            throw LSMTError.corrupt(name: name, detail: "index entry \(i) (\(s)) points outside the data area [8, \(limit)) sectors")
        }
    }
}
