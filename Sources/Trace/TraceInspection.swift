/// A trace file read for display (`obd trace inspect`): the header checks of
/// formats/Trace.md section 4 and the record checks apply, but a checksum that does not
/// hold is reported instead of thrown, so the records can still be shown.
public struct TraceInspection: Sendable, Equatable {
    /// The records, in file order.
    public let records: [TraceRecord]
    /// The header's data size (24 × records).
    public let dataSize: UInt64
    /// The checksum in the header (offset 16) and the one the record bytes give.
    public let storedChecksum: UInt32
    public let computedChecksum: UInt32

    /// Whether the stored checksum matches the records.
    public var checksumHolds: Bool { storedChecksum == computedChecksum }

    /// Per layer index: read records, bytes they read, write records.
    public var layers: [(layer: UInt32, reads: Int, bytes: UInt64, writes: Int)] {
        var t: [UInt32: (reads: Int, bytes: UInt64, writes: Int)] = [:]
        for r in records {
            var e = t[r.layerIndex] ?? (0, 0, 0)
            if r.op == TraceRecord.read {
                e.reads += 1
                e.bytes += r.count
            } else {
                e.writes += 1
            }
            t[r.layerIndex] = e
        }
        return t.keys.sorted().map { (layer: $0, reads: t[$0]!.reads, bytes: t[$0]!.bytes, writes: t[$0]!.writes) }
    }

    /// Reads the trace in `bytes` (a whole file; `path` names it in errors).
    public init(bytes: [UInt8], path: String) throws(TraceError) {
        let (dataSize, stored) = try TraceFormat.checkHeader(Array(bytes.prefix(TraceFormat.headerSize)), fileSize: UInt64(bytes.count), path: path)
        self.dataSize = dataSize
        storedChecksum = stored
        computedChecksum = bytes.withUnsafeBytes { TraceChecksum.raw(UnsafeRawBufferPointer(rebasing: $0[TraceFormat.headerSize...])) }
        records = try TraceFormat.decodeRecords(bytes, from: TraceFormat.headerSize, checksum: nil, path: path, offsetBase: TraceFormat.headerSize)
    }

}
