import BlockIO
import TCMU
import Testing
import TestSupport

/// Plays the kernel's side of the TCMU ring on an ordinary memory region: writes
/// command entries (header, iovecs into the data area, CDB) at `cmd_head`, and reads
/// the responses userspace posts at `cmd_tail`.
final class FakeKernelRing {
    static let size = 1 << 20
    static let ringOffset = 128
    static let ringSize = 64 * 1024
    static let dataOffset = ringOffset + ringSize
    let base = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
    var head = 0
    var dataCursor = dataOffset

    init() {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.size)
        base.storeBytes(of: UInt16(2), toByteOffset: 0, as: UInt16.self)
        base.storeBytes(of: UInt16(1), toByteOffset: 2, as: UInt16.self)        // out-of-order completion
        base.storeBytes(of: UInt32(Self.ringOffset), toByteOffset: 4, as: UInt32.self)
        base.storeBytes(of: UInt32(Self.ringSize), toByteOffset: 8, as: UInt32.self)
    }

    deinit { base.deallocate() }

    var tail: Int { Int(base.load(fromByteOffset: 64, as: UInt32.self)) }

    private func publish() { base.storeBytes(of: UInt32(head), toByteOffset: 12, as: UInt32.self) }

    /// Queues a command; returns the data-area offsets of its buffers.
    @discardableResult
    func submit(id: UInt16, cdb: [UInt8], buffers: [Int], fill: [UInt8] = [], lenOverride: Int? = nil,
                iovOverride: (Int, Int)? = nil, cdbOffOverride: Int? = nil) -> [Int] {
        let base = 48 + 16 * buffers.count
        var len = max(112, base) + cdb.count
        len = (len + 7) / 8 * 8
        if head + len > Self.ringSize {
            // Pad to the end of the ring, as the kernel does.
            let pad = Self.ringSize - head
            self.base.storeBytes(of: UInt32(pad) | 0, toByteOffset: Self.ringOffset + head, as: UInt32.self)
            head = 0
        }
        let e = self.base + Self.ringOffset + head
        e.initializeMemory(as: UInt8.self, repeating: 0, count: len)
        e.storeBytes(of: UInt32(lenOverride ?? len) | 1, as: UInt32.self)
        e.storeBytes(of: id, toByteOffset: 4, as: UInt16.self)
        e.storeBytes(of: UInt32(buffers.count), toByteOffset: 8, as: UInt32.self)
        var offsets: [Int] = []
        var filled = 0
        for (i, n) in buffers.enumerated() {
            var (b, l) = (dataCursor, n)
            if let o = iovOverride { (b, l) = o }
            e.storeBytes(of: UInt64(bitPattern: Int64(b)), toByteOffset: 48 + 16 * i, as: UInt64.self)
            e.storeBytes(of: UInt64(l), toByteOffset: 56 + 16 * i, as: UInt64.self)
            if iovOverride == nil {
                for k in 0..<n where filled < fill.count {
                    self.base.storeBytes(of: fill[filled], toByteOffset: dataCursor + k, as: UInt8.self)
                    filled += 1
                }
                offsets.append(dataCursor)
                dataCursor += (n + 4095) / 4096 * 4096
                if dataCursor >= Self.size - 65536 { dataCursor = Self.dataOffset }
            }
        }
        let cdbOff = Self.ringOffset + head + max(112, base)
        e.storeBytes(of: UInt64(cdbOffOverride ?? cdbOff), toByteOffset: 24, as: UInt64.self)
        for (i, b) in cdb.enumerated() { self.base.storeBytes(of: b, toByteOffset: cdbOff + i, as: UInt8.self) }
        head = (head + len) % Self.ringSize
        publish()
        return offsets
    }

    /// Responses between `from` and the current tail: (cmd id, SCSI status, sense key, asc).
    func responses(from: Int) -> [(UInt16, UInt8, UInt8, UInt8)] {
        var out: [(UInt16, UInt8, UInt8, UInt8)] = []
        var t = from
        while t != tail {
            let e = base + Self.ringOffset + t
            let lenOp = e.load(as: UInt32.self)
            let len = Int(lenOp & ~7)
            if lenOp & 7 == 1 {
                out.append((e.load(fromByteOffset: 4, as: UInt16.self), e.load(fromByteOffset: 8, as: UInt8.self),
                            e.load(fromByteOffset: 18, as: UInt8.self), e.load(fromByteOffset: 28, as: UInt8.self)))
            }
            t = (t + len) % Self.ringSize
        }
        return out
    }

    func bytes(at offset: Int, count: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: base + offset, count: count)) }
}

@Suite("TCMU command ring")
struct CommandRingTests {
    @Test("commands are fetched, run and answered out of order; data lands in the data area")
    func roundTrip() throws {
        let k = FakeKernelRing()
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        var g = SplitMix64(seed: 1)
        let content = g.bytes(1 << 20)
        let disk = SCSIDisk(file: MemoryFile(bytes: content), readOnly: false, serial: "t")
        var expected: [UInt16: [UInt8]] = [:]
        var offsets: [UInt16: Int] = [:]
        for id in UInt16(1)...40 {
            let lba = UInt32(g.next() % 1000)
            let cdb: [UInt8] = [0x28, 0] + withUnsafeBytes(of: lba.bigEndian, Array.init) + [0, 0, 8, 0]
            offsets[id] = k.submit(id: id, cdb: cdb, buffers: [4096])[0]
            expected[id] = Array(content[Int(lba) * 512..<(Int(lba) * 512 + 4096)])
        }
        let commands = ring.fetch()
        #expect(commands.count == 40)
        // Complete in reverse order: each response takes the oldest slot with its own id.
        for c in commands.reversed() {
            #expect(c.invalid == nil)
            ring.complete(id: c.id, status: disk.execute(cdb: c.cdb, data: c.data))
        }
        let rsp = k.responses(from: 0)
        #expect(rsp.count == 40)
        #expect(Set(rsp.map(\.0)) == Set(UInt16(1)...40))
        #expect(rsp.allSatisfy { $0.1 == 0 })
        for (id, want) in expected { #expect(k.bytes(at: offsets[id]!, count: 4096) == want) }
        #expect(k.tail == k.head)
    }

    @Test("the ring wraps through padding entries")
    func wrap() throws {
        let k = FakeKernelRing()
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        let disk = SCSIDisk(file: MemoryFile(bytes: [UInt8](repeating: 1, count: 1 << 20)), readOnly: true, serial: "t")
        var answered = 0
        for round in 0..<30 {
            for i in 0..<20 { k.submit(id: UInt16(round * 20 + i), cdb: [0, 0, 0, 0, 0, 0], buffers: []) }
            let from = k.tail
            for c in ring.fetch() { ring.complete(id: c.id, status: disk.execute(cdb: c.cdb, data: c.data)) }
            ring.skipTrailingPadding()
            answered += k.responses(from: from).count
            #expect(k.tail == k.head)
        }
        #expect(answered == 600)
    }

    @Test("malformed entries are answered with CHECK CONDITION and never touch memory outside the region")
    func malformed() throws {
        let k = FakeKernelRing()
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        let disk = SCSIDisk(file: MemoryFile(bytes: [UInt8](repeating: 1, count: 1 << 20)), readOnly: false, serial: "t")
        let read8: [UInt8] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]
        k.submit(id: 1, cdb: read8, buffers: [4096], iovOverride: (FakeKernelRing.size - 100, 4096))   // iov past the end
        k.submit(id: 2, cdb: read8, buffers: [4096], iovOverride: (Int(bitPattern: 0xFFFF_FFFF_FFFF_0000), 4096))
        k.submit(id: 3, cdb: read8, buffers: [4096], cdbOffOverride: FakeKernelRing.size + 10)             // CDB outside
        k.submit(id: 4, cdb: [0xFF, 0, 0, 0, 0, 0], buffers: [])                                          // reserved opcode group
        k.submit(id: 5, cdb: read8, buffers: [1024])                                                      // buffer too small
        k.submit(id: 6, cdb: [0x12, 1, 0x80, 0, 255, 0], buffers: [4096])                                 // fine
        let cmds = ring.fetch()
        #expect(cmds.count == 6)
        for c in cmds { ring.complete(id: c.id, status: c.invalid ?? disk.execute(cdb: c.cdb, data: c.data)) }
        let rsp = Dictionary(uniqueKeysWithValues: k.responses(from: 0).map { ($0.0, $0) })
        #expect(rsp[1]?.1 == 2 && rsp[2]?.1 == 2 && rsp[3]?.1 == 2 && rsp[4]?.1 == 2 && rsp[5]?.1 == 2)
        #expect(rsp[6]?.1 == 0)
        #expect(rsp[5]?.2 == 5 && rsp[5]?.3 == 0x24)
    }

    @Test("an entry whose length runs off the ring stops the fetch; a bad mailbox is refused")
    func brokenRing() throws {
        let k = FakeKernelRing()
        k.submit(id: 1, cdb: [0, 0, 0, 0, 0, 0], buffers: [], lenOverride: FakeKernelRing.ringSize * 2)
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        #expect(ring.fetch().isEmpty)
        k.base.storeBytes(of: UInt32(FakeKernelRing.size), toByteOffset: 8, as: UInt32.self)
        #expect(throws: CommandRing.RingError.self) { try CommandRing(base: k.base, size: FakeKernelRing.size) }
        #expect(throws: CommandRing.RingError.self) { try CommandRing(base: k.base, size: 64) }
    }

    @Test("random CDBs never crash the disk emulation")
    func randomCDBs() throws {
        let disk = SCSIDisk(file: MemoryFile(bytes: [UInt8](repeating: 3, count: 1 << 20)), readOnly: false, serial: "t")
        let area = DataArea()
        var g = SplitMix64(seed: 9)
        let ops: [UInt8] = [0x00, 0x03, 0x12, 0x1A, 0x5A, 0x15, 0x25, 0x9E, 0x08, 0x28, 0xA8, 0x88, 0x0A, 0x2A, 0xAA, 0x8A, 0x35, 0x91, 0x42, 0x41, 0x93]
        for _ in 0..<5000 {
            var cdb = g.bytes(Int(g.next() % 17))
            if !cdb.isEmpty && g.next() % 4 != 0 { cdb[0] = ops[Int(g.next() % UInt64(ops.count))] }
            let data = area.buffers([Int(g.next() % 3) * 4096 + Int(g.next() % 600)], fill: UInt8(truncatingIfNeeded: g.next()))
            let status = disk.execute(cdb: cdb, data: data)
            // A healthy disk answers garbage with GOOD or an ILLEGAL REQUEST sense, never
            // a medium or hardware error.
            let allowed: [SCSIStatus] = [.invalidOpcode, .invalidFieldInCDB, .invalidFieldInParameterList, .lbaOutOfRange, .parameterListLengthError]
            #expect(status == .good || allowed.contains(status), "CDB \(cdb): \(status)")
        }
    }
}
