import BlockIO

/// Emulates a SCSI direct-access disk over a block file: the commands Linux sends to
/// a TCMU LUN. Thread-safe (the file is), so commands run concurrently.
public final class SCSIDisk: Sendable {
    public let file: any BlockFile
    public let readOnly: Bool
    public let blockSize: UInt64 = 512
    public let serial: String

    /// Longest data transfer obd accepts in one command (the kernel sends far less).
    static let maxTransferBlocks: UInt64 = 1 << 16
    /// Most LBAs one UNMAP descriptor or WRITE SAME may cover.
    static let maxUnmapBlocks: UInt32 = 0x0100_0000

    public init(file: any BlockFile, readOnly: Bool, serial: String) {
        self.file = file
        self.readOnly = readOnly || !file.isWritable
        self.serial = serial
    }

    public var blockCount: UInt64 { file.size / blockSize }

    /// Runs one command. `cdb` is the command descriptor block; `data` its buffers
    /// (data-in to fill, or data-out to read).
    public func execute(cdb: [UInt8], data: SCSIBuffers) -> SCSIStatus {
        guard let op = cdb.first else { return .invalidOpcode }
        switch op {
        case 0x00: return .good                                  // TEST UNIT READY
        case 0x03: return requestSense(cdb, data)
        case 0x12: return inquiry(cdb, data)
        case 0x1A, 0x5A: return modeSense(cdb, data)
        case 0x15, 0x55: return .good                            // MODE SELECT: nothing to change
        case 0x25: return readCapacity10(cdb, data)
        case 0x9E where cdb.count >= 16 && cdb[1] & 0x1F == 0x10: return readCapacity16(cdb, data)
        case 0x08, 0x28, 0xA8, 0x88: return readWrite(cdb, data, write: false)
        case 0x0A, 0x2A, 0xAA, 0x8A: return readWrite(cdb, data, write: true)
        case 0x35, 0x91: return synchronizeCache()
        case 0x42: return unmap(cdb, data)
        case 0x41, 0x93: return writeSame(cdb, data)
        case 0xA3 where cdb.count >= 12 && cdb[1] & 0x1F == 0x0C: return reportSupportedOpcodes(cdb, data)
        default: return .invalidOpcode
        }
    }

    // MARK: helpers

    static func be16(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(b[o]) << 8 | UInt64(b[o + 1]) }
    static func be32(_ b: [UInt8], _ o: Int) -> UInt64 { be16(b, o) << 16 | be16(b, o + 2) }
    static func be64(_ b: [UInt8], _ o: Int) -> UInt64 { be32(b, o) << 32 | be32(b, o + 4) }
    static func put16(_ b: inout [UInt8], _ o: Int, _ v: UInt64) { b[o] = UInt8(truncatingIfNeeded: v >> 8); b[o + 1] = UInt8(truncatingIfNeeded: v) }
    static func put32(_ b: inout [UInt8], _ o: Int, _ v: UInt64) { put16(&b, o, v >> 16); put16(&b, o + 2, v) }
    static func put64(_ b: inout [UInt8], _ o: Int, _ v: UInt64) { put32(&b, o, v >> 32); put32(&b, o + 4, v) }

    /// The CDB length each opcode group implies (0 if the group is reserved).
    public static func cdbLength(opcode: UInt8) -> Int {
        switch opcode >> 5 {
        case 0: return 6
        case 1, 2: return 10
        case 4: return 16
        case 5: return 12
        default: return 0
        }
    }

    private func requestSense(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        var s = [UInt8](repeating: 0, count: 18)
        s[0] = 0x70
        s[7] = 10
        data.copyIn(Array(s.prefix(Int(cdb.count > 4 ? cdb[4] : 0)))).ignore()
        return .good
    }

    private func inquiry(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        guard cdb.count >= 6 else { return .invalidFieldInCDB }
        let evpd = cdb[1] & 0x01 != 0
        let page = cdb[2]
        let alloc = Int(Self.be16(cdb, 3))
        var out: [UInt8]
        if !evpd {
            guard page == 0 else { return .invalidFieldInCDB }
            out = [UInt8](repeating: 0, count: 36)
            out[0] = 0x00           // direct-access block device
            out[2] = 0x06           // SPC-4
            out[3] = 0x12           // HiSup, response data format 2
            out[4] = 31
            out[7] = 0x02           // CmdQue
            out.replaceSubrange(8..<16, with: Array("LIO-ORG ".utf8))
            out.replaceSubrange(16..<32, with: Array("TCMU device     ".utf8))
            out.replaceSubrange(32..<36, with: Array("0002".utf8))
        } else {
            switch page {
            case 0x00:
                let pages: [UInt8] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
                out = [0, 0x00, 0, UInt8(pages.count)] + pages
            case 0x80:
                let s = Array(serial.utf8.prefix(250))
                out = [0, 0x80, 0, UInt8(s.count)] + s
            case 0x83:
                // One designator: T10 vendor ID "LIO-ORG " + serial (ASCII).
                let id = Array("LIO-ORG ".utf8) + Array(serial.utf8.prefix(200))
                let desig: [UInt8] = [0x02, 0x01, 0x00, UInt8(id.count)] + id
                out = [0, 0x83] + [UInt8(desig.count >> 8), UInt8(desig.count & 0xFF)] + desig
            case 0xB0:
                out = [UInt8](repeating: 0, count: 64)
                out[1] = 0xB0
                Self.put16(&out, 2, 0x3C)
                Self.put16(&out, 6, 8)                                  // optimal granularity: 4 KiB
                Self.put32(&out, 8, Self.maxTransferBlocks)            // maximum transfer length
                Self.put32(&out, 12, 2048)                             // optimal transfer length: 1 MiB
                if !readOnly {
                    Self.put32(&out, 20, UInt64(Self.maxUnmapBlocks))   // max unmap LBA count
                    Self.put32(&out, 24, 64)                           // max unmap descriptors
                    Self.put32(&out, 28, 8)                            // optimal unmap granularity
                    Self.put64(&out, 36, UInt64(Self.maxUnmapBlocks))  // max write same length
                }
            case 0xB1:
                out = [UInt8](repeating: 0, count: 64)
                out[1] = 0xB1
                Self.put16(&out, 2, 0x3C)
                Self.put16(&out, 4, 1)                                  // non-rotating medium
            case 0xB2:
                out = [UInt8](repeating: 0, count: 8)
                out[1] = 0xB2
                Self.put16(&out, 2, 4)
                if !readOnly {
                    out[5] = 0x80 | 0x40 | 0x20 | 0x04                  // LBPU, LBPWS, LBPWS10, LBPRZ
                    out[6] = 0x02                                       // thin provisioned
                }
            default:
                return .invalidFieldInCDB
            }
        }
        data.copyIn(Array(out.prefix(alloc))).ignore()
        return .good
    }

    private func readCapacity10(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        var out = [UInt8](repeating: 0, count: 8)
        let last = blockCount == 0 ? 0 : blockCount - 1
        Self.put32(&out, 0, min(last, 0xFFFF_FFFF))
        Self.put32(&out, 4, blockSize)
        data.copyIn(out).ignore()
        return .good
    }

    private func readCapacity16(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        var out = [UInt8](repeating: 0, count: 32)
        Self.put64(&out, 0, blockCount == 0 ? 0 : blockCount - 1)
        Self.put32(&out, 8, blockSize)
        out[13] = 3                                  // 8 logical blocks per physical (4 KiB)
        if !readOnly { out[14] = 0x80 | 0x40 }        // LBPME, LBPRZ
        data.copyIn(Array(out.prefix(Int(Self.be32(cdb, 10))))).ignore()
        return .good
    }

    private func modeSense(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        let ten = cdb[0] == 0x5A
        guard cdb.count >= (ten ? 10 : 6) else { return .invalidFieldInCDB }
        let page = cdb[2] & 0x3F
        let control = cdb[2] >> 6
        let alloc = Int(ten ? Self.be16(cdb, 7) : UInt64(cdb[4]))
        var pages: [UInt8] = []
        // Caching page: a write-back cache (WCE), so the kernel sends SYNCHRONIZE CACHE.
        var caching = [UInt8](repeating: 0, count: 20)
        caching[0] = 0x08
        caching[1] = 0x12
        if control != 1 && !readOnly { caching[2] = 0x04 }
        var controlPage = [UInt8](repeating: 0, count: 12)
        controlPage[0] = 0x0A
        controlPage[1] = 0x0A
        switch page {
        case 0x08: pages = caching
        case 0x0A: pages = controlPage
        case 0x3F: pages = caching + controlPage
        default: return .invalidFieldInCDB
        }
        let wp: UInt8 = readOnly ? 0x80 : 0x00
        var out: [UInt8]
        if ten {
            out = [0, 0, 0, wp, 0, 0, 0, 0] + pages
            Self.put16(&out, 0, UInt64(out.count - 2))
        } else {
            out = [UInt8(out6Length(pages)), 0, wp, 0] + pages
        }
        data.copyIn(Array(out.prefix(alloc))).ignore()
        return .good
    }

    private func out6Length(_ pages: [UInt8]) -> Int { min(255, pages.count + 3) }

    /// LBA and block count of a READ/WRITE CDB.
    static func lbaAndLength(_ cdb: [UInt8]) -> (UInt64, UInt64)? {
        switch cdb[0] {
        case 0x08, 0x0A:
            guard cdb.count >= 6 else { return nil }
            let lba = UInt64(cdb[1] & 0x1F) << 16 | UInt64(cdb[2]) << 8 | UInt64(cdb[3])
            return (lba, cdb[4] == 0 ? 256 : UInt64(cdb[4]))
        case 0x28, 0x2A, 0x41:
            guard cdb.count >= 10 else { return nil }
            return (be32(cdb, 2), be16(cdb, 7))
        case 0xA8, 0xAA:
            guard cdb.count >= 12 else { return nil }
            return (be32(cdb, 2), be32(cdb, 6))
        case 0x88, 0x8A, 0x93:
            guard cdb.count >= 16 else { return nil }
            return (be64(cdb, 2), be32(cdb, 10))
        default:
            return nil
        }
    }

    private func inRange(_ lba: UInt64, _ blocks: UInt64) -> Bool {
        lba <= blockCount && blocks <= blockCount - lba
    }

    private func readWrite(_ cdb: [UInt8], _ data: SCSIBuffers, write: Bool) -> SCSIStatus {
        guard let (lba, blocks) = Self.lbaAndLength(cdb) else { return .invalidFieldInCDB }
        if write && readOnly { return .writeProtected }
        guard inRange(lba, blocks) else { return .lbaOutOfRange }
        guard blocks <= Self.maxTransferBlocks else { return .invalidFieldInCDB }
        var want = Int(blocks * blockSize)
        guard data.count >= want else { return .invalidFieldInCDB }
        var offset = lba * blockSize
        do {
            for seg in data.segments where want > 0 {
                let n = min(seg.count, want)
                let piece = UnsafeMutableRawBufferPointer(rebasing: seg[0..<n])
                if write {
                    try file.write(UnsafeRawBufferPointer(piece), at: offset)
                } else {
                    let got = try file.read(into: piece, at: offset)
                    if got < n { return .readError }
                }
                offset += UInt64(n)
                want -= n
            }
        } catch {
            return write ? .writeError : .readError
        }
        if write && cdb.count >= 2 && cdb[0] != 0x0A && cdb[1] & 0x08 != 0 {
            // FUA: the data must be durable before completion.
            do { try file.flush() } catch { return .writeError }
        }
        return .good
    }

    /// Opcodes (and service actions) obd handles, with their CDB lengths.
    static let supported: [(op: UInt8, sa: UInt16?, length: UInt16)] = [
        (0x00, nil, 6), (0x03, nil, 6), (0x08, nil, 6), (0x0A, nil, 6), (0x12, nil, 6), (0x15, nil, 6), (0x1A, nil, 6),
        (0x25, nil, 10), (0x28, nil, 10), (0x2A, nil, 10), (0x35, nil, 10), (0x41, nil, 10), (0x42, nil, 10),
        (0x55, nil, 10), (0x5A, nil, 10), (0x88, nil, 16), (0x8A, nil, 16), (0x91, nil, 16), (0x93, nil, 16),
        (0x9E, 0x10, 16), (0xA3, 0x0C, 12), (0xA8, nil, 12), (0xAA, nil, 12),
    ]

    /// REPORT SUPPORTED OPERATION CODES: all commands (option 0) or one (options 1, 2).
    private func reportSupportedOpcodes(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        let options = cdb[2] & 0x07
        let alloc = Int(Self.be32(cdb, 6))
        var out: [UInt8]
        switch options {
        case 0:
            var list: [UInt8] = []
            for c in Self.supported {
                var d = [UInt8](repeating: 0, count: 8)
                d[0] = c.op
                Self.put16(&d, 2, UInt64(c.sa ?? 0))
                d[5] = c.sa == nil ? 0 : 0x01          // SERVACTV
                Self.put16(&d, 6, UInt64(c.length))
                list += d
            }
            out = [0, 0, 0, 0] + list
            Self.put32(&out, 0, UInt64(list.count))
        case 1, 2:
            let op = cdb[3]
            let sa = Self.be16(cdb, 4)
            let match = Self.supported.first { $0.op == op && (options == 1 ? $0.sa == nil : $0.sa.map(UInt64.init) == sa) }
            guard options == 1 || Self.supported.contains(where: { $0.op == op && $0.sa != nil }) || match == nil else {
                return .invalidFieldInCDB
            }
            if let m = match {
                // Supported: CDB usage bitmap of the opcode's length, all bits in use.
                var usage = [UInt8](repeating: 0xFF, count: Int(m.length))
                usage[0] = op
                out = [0, 0x03, 0, UInt8(m.length)] + usage
            } else {
                out = [0, 0x01, 0, 0]                  // not supported
            }
        default:
            return .invalidFieldInCDB
        }
        data.copyIn(Array(out.prefix(alloc))).ignore()
        return .good
    }

    private func synchronizeCache() -> SCSIStatus {
        do { try file.flush() } catch { return .writeError }
        return .good
    }

    private func unmap(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        if readOnly { return .writeProtected }
        guard cdb.count >= 10 else { return .invalidFieldInCDB }
        let listLength = Int(Self.be16(cdb, 7))
        if listLength == 0 { return .good }
        guard listLength >= 8, listLength <= data.count else { return .parameterListLengthError }
        let p = data.copyOut(limit: listLength)
        let descLength = Int(Self.be16(p, 2))
        guard descLength % 16 == 0, 8 + descLength <= p.count else { return .parameterListLengthError }
        var ranges: [(UInt64, UInt64)] = []
        for i in 0..<(descLength / 16) {
            let lba = Self.be64(p, 8 + 16 * i)
            let n = Self.be32(p, 16 + 16 * i)
            guard n <= UInt64(Self.maxUnmapBlocks) else { return .invalidFieldInParameterList }
            guard inRange(lba, n) else { return .lbaOutOfRange }
            ranges.append((lba, n))
        }
        do {
            for (lba, n) in ranges where n > 0 { try file.discard(offset: lba * blockSize, length: n * blockSize) }
        } catch {
            return .writeError
        }
        return .good
    }

    private func writeSame(_ cdb: [UInt8], _ data: SCSIBuffers) -> SCSIStatus {
        guard let (lba, blocks) = Self.lbaAndLength(cdb) else { return .invalidFieldInCDB }
        if readOnly { return .writeProtected }
        guard inRange(lba, blocks) else { return .lbaOutOfRange }
        guard blocks > 0, blocks <= UInt64(Self.maxUnmapBlocks) else { return .invalidFieldInCDB }
        let unmapBit = cdb[1] & 0x08 != 0
        let noDataOut = cdb[0] == 0x93 && cdb[1] & 0x01 != 0
        do {
            if unmapBit {
                try file.discard(offset: lba * blockSize, length: blocks * blockSize)
                return .good
            }
            let block = noDataOut ? [UInt8](repeating: 0, count: Int(blockSize)) : data.copyOut(limit: Int(blockSize))
            guard block.count == Int(blockSize) else { return .parameterListLengthError }
            if block.allSatisfy({ $0 == 0 }) {
                try file.writeZeroes(offset: lba * blockSize, length: blocks * blockSize)
                return .good
            }
            let per = 2048
            var pattern = [UInt8]()
            pattern.reserveCapacity(per * Int(blockSize))
            for _ in 0..<per { pattern += block }
            var done: UInt64 = 0
            while done < blocks {
                let n = min(UInt64(per), blocks - done)
                try pattern.withUnsafeBytes {
                    try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n * blockSize)]), at: (lba + done) * blockSize)
                }
                done += n
            }
        } catch {
            return .writeError
        }
        return .good
    }
}

extension Int {
    /// Discards a result on purpose.
    @inline(__always) func ignore() {}
}
