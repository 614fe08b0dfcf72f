import BlockIO

/// virtio-blk's wire constants.
public enum VirtioBlk {
    public static let typeIn: UInt32 = 0
    public static let typeOut: UInt32 = 1
    public static let typeFlush: UInt32 = 4
    public static let typeGetID: UInt32 = 8
    public static let typeDiscard: UInt32 = 11
    public static let typeWriteZeroes: UInt32 = 13

    public static let statusOK: UInt8 = 0
    public static let statusIOError: UInt8 = 1
    public static let statusUnsupported: UInt8 = 2

    /// Bytes of the request header (type, reserved, sector) and of a discard/write-zeroes segment.
    public static let headerSize = 16
    public static let rangeSize = 16
    public static let idSize = 20
    public static let sectorSize: UInt64 = 512
    /// The unmap flag of a write-zeroes segment.
    public static let flagUnmap: UInt32 = 1
}

/// The disk a vhost-user-blk back-end serves: a `BlockFile`, its limits and what it
/// advertises. Knows nothing of image formats.
public struct VirtioBlkDisk: Sendable {
    public let file: any BlockFile
    public let readOnly: Bool
    /// The GET_ID answer: 20 bytes, zero-padded.
    public let serial: [UInt8]
    public let capacitySectors: UInt64
    public let blockSize: UInt32
    /// Sectors and segments one discard or write-zeroes request may carry.
    public let maxRangeSectors: UInt32
    public let maxRangeSegments: UInt32

    public init(file: any BlockFile, readOnly: Bool, serial: String, blockSize: UInt32 = 512) {
        self.file = file
        self.readOnly = readOnly || !file.isWritable
        var id = Array(serial.utf8.prefix(VirtioBlk.idSize))
        id += [UInt8](repeating: 0, count: VirtioBlk.idSize - id.count)
        self.serial = id
        capacitySectors = file.size / VirtioBlk.sectorSize
        self.blockSize = blockSize
        maxRangeSectors = 1 << 22 // 2 GiB per range
        maxRangeSegments = 16
    }

    /// The virtio feature bits offered to the front-end.
    public var features: UInt64 {
        var f = VirtioFeature.version1 | VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx
            | VirtioFeature.protocolFeatures | VirtioFeature.blkSegMax | VirtioFeature.blkBlockSize
            | VirtioFeature.blkFlush | VirtioFeature.blkMultiQueue
        if readOnly { f |= VirtioFeature.blkReadOnly } else { f |= VirtioFeature.blkDiscard | VirtioFeature.blkWriteZeroes }
        return f
    }

    /// The virtio-blk configuration space (60 bytes), for `queues` queues of `queueSize` entries.
    public func configSpace(queues: Int, queueSize: Int) -> [UInt8] {
        var w = PayloadWriter()
        w.u64(capacitySectors)        // capacity
        w.u32(0)                      // size_max (not offered)
        w.u32(UInt32(max(queueSize - 2, 1))) // seg_max: the header and status take two
        w.u16(0); w.u8(0); w.u8(0)    // geometry (not offered)
        w.u32(blockSize)              // blk_size
        w.u8(0); w.u8(0); w.u16(0); w.u32(0) // topology (not offered)
        w.u8(0)                       // writeback (CONFIG_WCE not offered)
        w.u8(0)                       // unused
        w.u16(UInt16(queues))         // num_queues
        w.u32(maxRangeSectors)        // max_discard_sectors
        w.u32(maxRangeSegments)       // max_discard_seg
        w.u32(blockSize / 512)        // discard_sector_alignment
        w.u32(maxRangeSectors)        // max_write_zeroes_sectors
        w.u32(maxRangeSegments)       // max_write_zeroes_seg
        w.u8(0)                       // write_zeroes_may_unmap
        w.u8(0); w.u8(0); w.u8(0)     // unused
        return w.bytes
    }

    /// What became of one request.
    public enum Outcome: Equatable, Sendable {
        /// A status byte was written; `length` bytes of guest memory were written in all.
        case completed(status: UInt8, length: UInt32)
        /// No header or no status byte to write: completed with length 0, nothing written.
        case malformed(String)
    }

    /// Requests of data scattered over several guest buffers and up to this size go
    /// through the queue's bounce buffer: one read (or write) of the disk instead of one
    /// per buffer (a 1 MiB guest read is typically 256 pages, each a lookup and a pread).
    public static let bounceBytes = 1 << 20

    /// Carries out the request whose buffers are `segments` (device-readable first, then
    /// device-writable) and writes its status byte. `scratch` (at least `bounceBytes`, of
    /// the calling thread) lets a scattered transfer be one disk read or write.
    public func handle(_ segments: [GuestSegment], scratch: UnsafeMutableRawBufferPointer? = nil,
                       log: (String) -> Void) -> Outcome {
        var readable = 0, writable = 0
        for s in segments {
            if s.writable { writable += s.length } else {
                guard writable == 0 else { return .malformed("a device-readable buffer follows a device-writable one") }
                readable += s.length
            }
        }
        guard readable >= VirtioBlk.headerSize else { return .malformed("request header has \(readable) of 16 bytes") }
        guard writable >= 1 else { return .malformed("no device-writable byte for the status") }
        // The header, gathered once into local memory (no allocation on the request path).
        var header: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &header) { h in
            forEachPiece(segments, writable: false, from: 0, count: VirtioBlk.headerSize) { p, n, at in
                h.baseAddress!.advanced(by: at).copyMemory(from: p, byteCount: n)
            }
        }
        let type = UInt32(truncatingIfNeeded: UInt64(littleEndian: header.0))
        let sector = UInt64(littleEndian: header.1)
        let last = segments[segments.count - 1]
        let statusByte = last.pointer + (last.length - 1)
        let dataIn = writable - 1
        let dataOut = readable - VirtioBlk.headerSize
        var length: UInt32 = 1
        let status: UInt8
        switch type {
        case VirtioBlk.typeIn:
            status = transfer(segments, writable: true, bytes: dataIn, sector: sector, scratch: scratch, log: log)
            if status == VirtioBlk.statusOK { length = UInt32(truncatingIfNeeded: dataIn + 1) }
        case VirtioBlk.typeOut:
            status = readOnly ? VirtioBlk.statusIOError
                              : transfer(segments, writable: false, bytes: dataOut, sector: sector, scratch: scratch, log: log)
        case VirtioBlk.typeFlush:
            do { try file.flush(); status = VirtioBlk.statusOK } catch {
                log("flush failed: \(error)")
                status = VirtioBlk.statusIOError
            }
        case VirtioBlk.typeGetID:
            let n = min(dataIn, VirtioBlk.idSize)
            serial.withUnsafeBytes { id in
                forEachPiece(segments, writable: true, from: 0, count: n) { p, len, at in
                    p.copyMemory(from: id.baseAddress! + at, byteCount: len)
                }
            }
            status = VirtioBlk.statusOK
            length = UInt32(n + 1)
        case VirtioBlk.typeDiscard, VirtioBlk.typeWriteZeroes:
            status = readOnly ? VirtioBlk.statusIOError
                              : ranges(segments, bytes: dataOut, zeroes: type == VirtioBlk.typeWriteZeroes, log: log)
        default:
            status = VirtioBlk.statusUnsupported
        }
        statusByte.storeBytes(of: status, as: UInt8.self)
        return .completed(status: status, length: length)
    }

    /// Whether `[sector, +bytes)` is whole sectors inside the disk.
    private func inside(sector: UInt64, bytes: UInt64) -> Bool {
        bytes % VirtioBlk.sectorSize == 0 && sector <= capacitySectors && bytes / VirtioBlk.sectorSize <= capacitySectors - sector
    }

    /// IN (into the writable buffers) or OUT (from the readable ones after the header).
    private func transfer(_ segments: [GuestSegment], writable: Bool, bytes: Int, sector: UInt64,
                          scratch: UnsafeMutableRawBufferPointer?, log: (String) -> Void) -> UInt8 {
        guard inside(sector: sector, bytes: UInt64(bytes)) else { return VirtioBlk.statusIOError }
        let base = sector * VirtioBlk.sectorSize
        let from = writable ? 0 : VirtioBlk.headerSize
        var failure: (any Error)?
        if let scratch, bytes > 0, bytes <= scratch.count {
            var pieces = 0
            forEachPiece(segments, writable: writable, from: from, count: bytes) { _, _, _ in pieces += 1 }
            if pieces > 1 {
                let buffer = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<bytes])
                do {
                    if writable {
                        let got = try file.read(into: buffer, at: base)
                        if got != bytes { throw BlockIOError.truncated(name: file.name, offset: base, wanted: bytes, got: got) }
                        forEachPiece(segments, writable: true, from: 0, count: bytes) { p, n, at in
                            p.copyMemory(from: buffer.baseAddress! + at, byteCount: n)
                        }
                    } else {
                        forEachPiece(segments, writable: false, from: from, count: bytes) { p, n, at in
                            (buffer.baseAddress! + at).copyMemory(from: p, byteCount: n)
                        }
                        try file.write(UnsafeRawBufferPointer(buffer), at: base)
                    }
                    return VirtioBlk.statusOK
                } catch {
                    log("\(writable ? "read" : "write") of \(bytes) bytes at sector \(sector) failed: \(error)")
                    return VirtioBlk.statusIOError
                }
            }
        }
        forEachPiece(segments, writable: writable, from: from, count: bytes) { p, n, at in
            guard failure == nil else { return }
            do {
                if writable {
                    let got = try file.read(into: UnsafeMutableRawBufferPointer(start: p, count: n), at: base + UInt64(at))
                    if got != n { throw BlockIOError.truncated(name: file.name, offset: base + UInt64(at), wanted: n, got: got) }
                } else {
                    try file.write(UnsafeRawBufferPointer(start: p, count: n), at: base + UInt64(at))
                }
            } catch { failure = error }
        }
        if let failure {
            log("\(writable ? "read" : "write") of \(bytes) bytes at sector \(sector) failed: \(failure)")
            return VirtioBlk.statusIOError
        }
        return VirtioBlk.statusOK
    }

    /// DISCARD and WRITE_ZEROES: the 16-byte ranges after the header.
    private func ranges(_ segments: [GuestSegment], bytes: Int, zeroes: Bool, log: (String) -> Void) -> UInt8 {
        guard bytes > 0, bytes % VirtioBlk.rangeSize == 0, bytes / VirtioBlk.rangeSize <= Int(maxRangeSegments) else {
            return VirtioBlk.statusIOError
        }
        var raw = [UInt8](repeating: 0, count: bytes)
        raw.withUnsafeMutableBytes { r in
            forEachPiece(segments, writable: false, from: VirtioBlk.headerSize, count: bytes) { p, n, at in
                r.baseAddress!.advanced(by: at).copyMemory(from: p, byteCount: n)
            }
        }
        var list: [(sector: UInt64, count: UInt32)] = []
        for i in 0..<(bytes / VirtioBlk.rangeSize) {
            let (sector, count, flags) = raw.withUnsafeBytes { r in
                (UInt64(littleEndian: r.loadUnaligned(fromByteOffset: 16 * i, as: UInt64.self)),
                 UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 16 * i + 8, as: UInt32.self)),
                 UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 16 * i + 12, as: UInt32.self)))
            }
            guard flags & ~(zeroes ? VirtioBlk.flagUnmap : 0) == 0 else { return VirtioBlk.statusUnsupported }
            guard count <= maxRangeSectors, inside(sector: sector, bytes: UInt64(count) * VirtioBlk.sectorSize) else {
                return VirtioBlk.statusIOError
            }
            list.append((sector, count))
        }
        do {
            for r in list where r.count > 0 {
                let off = r.sector * VirtioBlk.sectorSize, len = UInt64(r.count) * VirtioBlk.sectorSize
                if zeroes { try file.writeZeroes(offset: off, length: len) } else { try file.discard(offset: off, length: len) }
            }
        } catch {
            log("\(zeroes ? "write-zeroes" : "discard") failed: \(error)")
            return VirtioBlk.statusIOError
        }
        return VirtioBlk.statusOK
    }
}

/// Calls `body(pointer, length, position)` for the pieces of the readable (or writable)
/// buffers covering bytes `[from, from+count)` of that side, in order.
@inline(__always)
func forEachPiece(_ segments: [GuestSegment], writable: Bool, from: Int, count: Int,
                  _ body: (UnsafeMutableRawPointer, Int, Int) -> Void) {
    var skip = from, left = count, pos = 0
    for s in segments where s.writable == writable {
        guard left > 0 else { return }
        if skip >= s.length { skip -= s.length; continue }
        let n = min(s.length - skip, left)
        body(s.pointer + skip, n, pos)
        skip = 0
        left -= n
        pos += n
    }
}
