import BlockIO

/// What a commit writes into the new layer's header.
public struct CommitArgs: Sendable {
    public var uuid: LayerUUID?
    /// Parent UUID; when nil, the parent of the last source's header is kept.
    public var parentUUID: LayerUUID?
    /// Commit message (at most 256 bytes).
    public var message: [UInt8] = []

    public init(uuid: LayerUUID? = nil, parentUUID: LayerUUID? = nil, message: [UInt8] = []) {
        self.uuid = uuid
        self.parentUUID = parentUUID
        self.message = message
    }
}

/// Compaction of an index into a new read-only layer, byte for byte as overlaybd's
/// commit does it (see `formats/LSMT.md`, "Commit"): data is copied in 32 KiB steps,
/// adjacent steps folded while the sum stays below 16383 sectors, the index padded
/// to a multiple of 256 entries.
public enum LayerCommit {
    public static let copyStep = 32 * 1024
    public static let indexPadding = 256

    /// Writes a read-only layer into `sink`.
    /// - Parameters:
    ///   - segments: sorted, non-overlapping entries; each tag selects a source.
    ///   - sources: files indexed by tag.
    ///   - virtualSize: the header's virtual size.
    ///   - defaultParent: parent used when `args.parentUUID` is nil.
    ///   - progress: called with the bytes of data copied so far.
    /// - Returns: the number of valid (unpadded) index entries written.
    @discardableResult
    public static func write(segments: [Segment], sources: [any BlockFile], virtualSize: UInt64,
                             defaultParent: LayerUUID, args: CommitArgs, into sink: any AppendSink,
                             progress: ((UInt64) -> Void)? = nil) throws -> Int {
        guard args.message.count <= LSMTHeader.userTagSize else {
            throw LSMTError.invalidArgument("commit message is \(args.message.count) bytes; at most \(LSMTHeader.userTagSize) fit in the header")
        }
        var header = LSMTHeader(flags: [.isHeader, .isDataFile, .sealed], virtualSize: virtualSize,
                                uuid: args.uuid ?? .null, parentUUID: args.parentUUID ?? defaultParent)
        header.userTag = args.message
        return try compact(segments: segments, sources: sources, header: header, verbatimTag: nil, padIndex: true,
                           into: sink, progress: progress)
    }

    /// The compaction shared by the native and the warp commit: writes `header`, copies
    /// the data of every entry (except those tagged `verbatimTag`, which are emitted as
    /// they are), folds, writes the index (padded to 256 entries when `padIndex`) and the
    /// trailer. Returns the number of valid entries.
    static func compact(segments: [Segment], sources: [any BlockFile], header: LSMTHeader, verbatimTag: UInt8?,
                        padIndex: Bool, into sink: any AppendSink, progress: ((UInt64) -> Void)?) throws -> Int {
        try header.serialize().withUnsafeBytes { try sink.append($0) }

        let step = copyStep
        let stepSectors = UInt64(step / 512)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: step, alignment: 4096)
        defer { buffer.deallocate() }
        var out: [Segment] = []
        out.reserveCapacity(segments.count + 16)
        var cursor: UInt64 = 8
        var copied: UInt64 = 0

        func emit(_ s: Segment) {
            if var last = out.last, last.end == s.offset, last.mend == s.moffset, last.zeroed == s.zeroed,
               last.tag == s.tag, UInt64(last.length) + UInt64(s.length) < UInt64(Segment.maxLength) {
                last.length += s.length
                out[out.count - 1] = last
            } else {
                out.append(s)
            }
        }

        for seg in segments {
            if let verbatimTag, seg.tag == verbatimTag {
                emit(seg)
                continue
            }
            if seg.zeroed {
                var z = seg
                z.moffset = cursor
                emit(z)
                continue
            }
            guard Int(seg.tag) < sources.count else {
                throw LSMTError.invalidArgument("segment \(seg) names source \(seg.tag) but only \(sources.count) exist")
            }
            let source = sources[Int(seg.tag)]
            var lba = seg.offset
            var from = seg.moffset
            var left = UInt64(seg.length)
            while left > 0 {
                let n = min(left, stepSectors)
                let bytes = Int(n * 512)
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes])
                let got = try source.read(into: chunk, at: from * 512)
                if got < bytes {
                    // Past the end of the source: zeros, as overlaybd reads them.
                    chunk.baseAddress!.advanced(by: got).initializeMemory(as: UInt8.self, repeating: 0, count: bytes - got)
                }
                try sink.append(UnsafeRawBufferPointer(chunk))
                emit(Segment(offset: lba, length: UInt32(n), moffset: cursor, zeroed: false, tag: seg.tag))
                cursor += n
                lba += n
                from += n
                left -= n
                copied += UInt64(bytes)
            }
            progress?(copied)
        }

        let valid = out.count
        let padded = padIndex ? (valid + indexPadding - 1) / indexPadding * indexPadding : valid
        let indexOffset = cursor * 512
        var start = 0
        while start < padded {
            // Written in chunks of 256 entries (4096 bytes).
            let stop = min(start + indexPadding, padded)
            var chunk = Array(out[min(start, valid)..<min(stop, valid)])
            chunk.append(contentsOf: repeatElement(Segment.invalid, count: (stop - start) - chunk.count))
            try Segment.encode(chunk[...]).withUnsafeBytes { try sink.append($0) }
            start = stop
        }
        var trailer = header
        trailer.flags = [.isDataFile, .sealed]
        trailer.indexOffset = indexOffset
        trailer.indexSize = UInt64(padded)
        try trailer.serialize().withUnsafeBytes { try sink.append($0) }
        try sink.finish()
        return valid
    }
}
