import BlockIO
import LSMT
import TCMU
import Testing
import TestSupport

/// Memory segments for command data, freed at the end of a test.
final class DataArea {
    var blocks: [UnsafeMutableRawBufferPointer] = []
    func buffers(_ sizes: [Int], fill: UInt8 = 0) -> SCSIBuffers {
        let segs = sizes.map { n -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 4096)
            b.initializeMemory(as: UInt8.self, repeating: fill)
            blocks.append(b)
            return b
        }
        return SCSIBuffers(segs)
    }
    func buffers(bytes: [UInt8], split: Int = 4096) -> SCSIBuffers {
        var sizes: [Int] = []
        var left = bytes.count
        while left > 0 { sizes.append(min(split, left)); left -= split }
        let b = buffers(sizes)
        b.copyIn(bytes)
        return b
    }
    deinit { blocks.forEach { $0.deallocate() } }
}

func be32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
func be64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }

@Suite("SCSI disk emulation")
struct SCSIDiskTests {
    func writableDisk(_ dir: TemporaryDirectory, size: UInt64 = 4 << 20) throws -> (SCSIDisk, LayerStack) {
        let up = try WritableLayer.create(dataPath: dir.file("d"), indexPath: dir.file("i"), virtualSize: size)
        let stack = try LayerStack(lowers: [], upper: up)
        return (SCSIDisk(file: stack, readOnly: false, serial: "obd-test"), stack)
    }

    @Test("INQUIRY: standard data and every VPD page Linux asks for")
    func inquiry() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (disk, _) = try writableDisk(dir)
        let area = DataArea()
        var b = area.buffers([96])
        #expect(disk.execute(cdb: [0x12, 0, 0, 0, 96, 0], data: b) == .good)
        let std = b.copyOut(limit: 36)
        #expect(std[0] == 0 && String(decoding: std[8..<16], as: UTF8.self) == "LIO-ORG " && String(decoding: std[16..<32], as: UTF8.self) == "TCMU device     ")
        b = area.buffers([255])
        #expect(disk.execute(cdb: [0x12, 1, 0x00, 0, 255, 0], data: b) == .good)
        #expect(b.copyOut(limit: 10) == [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])
        for page: UInt8 in [0x80, 0x83, 0xB0, 0xB1, 0xB2] {
            b = area.buffers([255])
            #expect(disk.execute(cdb: [0x12, 1, page, 0, 255, 0], data: b) == .good)
            #expect(b.copyOut(limit: 2)[1] == page)
        }
        b = area.buffers([255])
        #expect(disk.execute(cdb: [0x12, 1, 0xB2, 0, 255, 0], data: b) == .good)
        #expect(b.copyOut(limit: 6)[5] & 0xE4 == 0xE4, "LBPU, LBPWS, LBPWS10, LBPRZ")
        #expect(disk.execute(cdb: [0x12, 1, 0x99, 0, 255, 0], data: b) == .invalidFieldInCDB)
        #expect(disk.execute(cdb: [0x12, 0, 0x01, 0, 255, 0], data: b) == .invalidFieldInCDB)
        // Allocation length smaller than the data: truncated, no overflow.
        b = area.buffers([4])
        #expect(disk.execute(cdb: [0x12, 0, 0, 0, 4, 0], data: b) == .good)
    }

    @Test("READ CAPACITY 10/16, MODE SENSE with write protect, TEST UNIT READY")
    func capacityAndModes() throws {
        let area = DataArea()
        let ro = SCSIDisk(file: MemoryFile(bytes: [UInt8](repeating: 0, count: 1 << 20), writable: false), readOnly: true, serial: "x")
        var b = area.buffers([8])
        #expect(ro.execute(cdb: [0x25] + [UInt8](repeating: 0, count: 9), data: b) == .good)
        #expect(b.copyOut(limit: 8) == be32(2047) + be32(512))
        b = area.buffers([32])
        #expect(ro.execute(cdb: [0x9E, 0x10] + [UInt8](repeating: 0, count: 8) + be32(32) + [0, 0], data: b) == .good)
        #expect(b.copyOut(limit: 12) == be64(2047) + be32(512))
        b = area.buffers([64])
        #expect(ro.execute(cdb: [0x1A, 0, 0x3F, 0, 64, 0], data: b) == .good)
        #expect(b.copyOut(limit: 3)[2] & 0x80 != 0, "write protect")
        b = area.buffers([64])
        #expect(ro.execute(cdb: [0x5A, 0, 0x08, 0, 0, 0, 0, 0, 64, 0], data: b) == .good)
        #expect(b.copyOut(limit: 4)[3] & 0x80 != 0)
        #expect(ro.execute(cdb: [0x1A, 0, 0x21, 0, 64, 0], data: b) == .invalidFieldInCDB)
        #expect(ro.execute(cdb: [0, 0, 0, 0, 0, 0], data: b) == .good)
        #expect(ro.execute(cdb: [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], data: area.buffers([512])) == .writeProtected)
        #expect(ro.execute(cdb: [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], data: area.buffers([24])) == .writeProtected)
        #expect(ro.execute(cdb: [0xC0, 0, 0, 0, 0, 0], data: b) == .invalidOpcode)
        #expect(ro.execute(cdb: [], data: b) == .invalidOpcode)
    }

    @Test("READ/WRITE 6/10/12/16 over scattered buffers, FUA, range checks")
    func readWrite() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (disk, stack) = try writableDisk(dir)
        let area = DataArea()
        var g = SplitMix64(seed: 1)
        let data = g.bytes(64 * 512)
        // WRITE(10) at LBA 100, 64 blocks, FUA, in 4 KiB pieces.
        #expect(disk.execute(cdb: [0x2A, 0x08] + be32(100) + [0, 0, 64, 0], data: area.buffers(bytes: data)) == .good)
        #expect(try stack.readBytes(at: 100 * 512, count: data.count) == data)
        for cdb: [UInt8] in [[0x08, 0, 0, 100, 64, 0], [0x28, 0] + be32(100) + [0, 0, 64, 0],
                             [0xA8, 0] + be32(100) + be32(64) + [0, 0], [0x88, 0] + be64(100) + be32(64) + [0, 0]] {
            let b = area.buffers([4096, 8192, 4096, 16384])
            #expect(disk.execute(cdb: cdb, data: b) == .good)
            #expect(b.copyOut(limit: data.count) == data)
        }
        let blocks = UInt64(4 << 20) / 512
        #expect(disk.execute(cdb: [0x88, 0] + be64(blocks - 1) + be32(2) + [0, 0], data: area.buffers([1024])) == .lbaOutOfRange)
        #expect(disk.execute(cdb: [0x88, 0] + be64(UInt64.max) + be32(2) + [0, 0], data: area.buffers([1024])) == .lbaOutOfRange)
        #expect(disk.execute(cdb: [0x28, 0] + be32(0) + [0, 0, 8, 0], data: area.buffers([512])) == .invalidFieldInCDB, "buffers smaller than the transfer")
        #expect(disk.execute(cdb: [0x28, 0, 0], data: area.buffers([512])) == .invalidFieldInCDB, "short CDB")
        #expect(disk.execute(cdb: [0x35] + [UInt8](repeating: 0, count: 9), data: area.buffers([])) == .good)
    }

    @Test("UNMAP and WRITE SAME (with and without the unmap bit)")
    func unmapAndWriteSame() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (disk, stack) = try writableDisk(dir)
        let area = DataArea()
        try [UInt8](repeating: 0xAB, count: 1 << 20).withUnsafeBytes { try stack.write($0, at: 0) }
        // UNMAP two ranges.
        let params: [UInt8] = [0, 38, 0, 32, 0, 0, 0, 0] + be64(8) + be32(8) + [0, 0, 0, 0] + be64(100) + be32(4) + [0, 0, 0, 0]
        #expect(disk.execute(cdb: [0x42, 0, 0, 0, 0, 0, 0, 0, UInt8(params.count), 0], data: area.buffers(bytes: params)) == .good)
        #expect(try stack.readBytes(at: 8 * 512, count: 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(try stack.readBytes(at: 0, count: 4096) == [UInt8](repeating: 0xAB, count: 4096))
        // Bad parameter lists.
        let bad: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0] + be64(UInt64.max - 1) + be32(8) + [0, 0, 0, 0]
        #expect(disk.execute(cdb: [0x42, 0, 0, 0, 0, 0, 0, 0, UInt8(bad.count), 0], data: area.buffers(bytes: bad)) == .lbaOutOfRange)
        let short: [UInt8] = [0, 22, 0, 64, 0, 0, 0, 0]
        #expect(disk.execute(cdb: [0x42, 0, 0, 0, 0, 0, 0, 0, 8, 0], data: area.buffers(bytes: short)) == .parameterListLengthError)
        // WRITE SAME(16) with UNMAP: zeros.
        #expect(disk.execute(cdb: [0x93, 0x08] + be64(200) + be32(16) + [0, 0], data: area.buffers([512])) == .good)
        #expect(try stack.readBytes(at: 200 * 512, count: 8192) == [UInt8](repeating: 0, count: 8192))
        // WRITE SAME(10) of a pattern block.
        let block = (0..<512).map { UInt8(truncatingIfNeeded: $0) }
        #expect(disk.execute(cdb: [0x41, 0] + be32(300) + [0, 0, 5, 0], data: area.buffers(bytes: block)) == .good)
        let got = try stack.readBytes(at: 300 * 512, count: 5 * 512)
        for i in 0..<5 { #expect(got[(i * 512)..<((i + 1) * 512)].elementsEqual(block)) }
    }

    @Test("REPORT SUPPORTED OPERATION CODES lists what execute() handles")
    func supportedOpcodes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (disk, _) = try writableDisk(dir)
        let area = DataArea()
        let b = area.buffers([4096])
        #expect(disk.execute(cdb: [0xA3, 0x0C, 0, 0, 0, 0] + be32(4096) + [0, 0], data: b) == .good)
        let out = b.copyOut(limit: 4096)
        let n = Int(be32ToInt(out))
        #expect(n % 8 == 0 && n > 0)
        for i in stride(from: 4, to: 4 + n, by: 8) {
            let op = out[i]
            var cdb = [UInt8](repeating: 0, count: Int(out[i + 6]) << 8 | Int(out[i + 7]))
            cdb[0] = op
            if out[i + 5] & 1 != 0 { cdb[1] = out[i + 3] }
            // Every listed opcode is recognised (whatever its fields say, never "invalid opcode").
            #expect(disk.execute(cdb: cdb, data: area.buffers([65536])) != .invalidOpcode, "opcode 0x\(String(op, radix: 16))")
        }
        let one = area.buffers([64])
        #expect(disk.execute(cdb: [0xA3, 0x0C, 1, 0x28, 0, 0] + be32(64) + [0, 0], data: one) == .good)
        #expect(one.copyOut(limit: 2)[1] & 0x07 == 0x03)
        #expect(disk.execute(cdb: [0xA3, 0x0C, 1, 0xC7, 0, 0] + be32(64) + [0, 0], data: one) == .good)
        #expect(one.copyOut(limit: 2)[1] & 0x07 == 0x01)
    }

    func be32ToInt(_ b: [UInt8]) -> UInt32 { UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]) }

    @Test("config strings: overlaybd/<path>[;<dev_id>]")
    func cfgstrings() {
        let c = TCMUService.parse("tcm-user/1/dev_7/overlaybd//var/lib/x/config.v1.json;123")
        #expect(c == TCMUService.DeviceConfig(hba: "1", name: "dev_7", subtype: "overlaybd", configPath: "/var/lib/x/config.v1.json", deviceID: "123"))
        #expect(TCMUService.parse("tcm-user/1/dev_7/overlaybd//a/b.json")?.deviceID == nil)
        #expect(TCMUService.parse("tcm-user/1/dev_7/qcow//a/b.qcow2")?.subtype == "qcow")
        #expect(TCMUService.parse("tcm-user/1/dev_7") == nil)
        #expect(TCMUService.parse("other/1/dev_7/overlaybd//x") == nil)
        #expect(TCMUService.parse("tcm-user/1/dev_7/overlaybd/") == nil)
    }
}
