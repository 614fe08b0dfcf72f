import Testing
import BlockIO
@testable import VhostUser

/// The descriptor-chain walker over memory the test owns.
@Suite struct ChainWalkerTests {
    final class Memory {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 4096)
        let guest: UInt64 = 0x10000
        lazy var memory = GuestMemory.unowned([(guestAddress: guest, userAddress: 0, bytes: bytes)])
        init() { bytes.initializeMemory(as: UInt8.self, repeating: 0) }
        deinit { bytes.deallocate() }
        func put(_ i: Int, table: Int = 0, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
            let p = bytes.baseAddress! + table + 16 * i
            p.storeBytes(of: addr, as: UInt64.self)
            p.storeBytes(of: len, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
            p.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
        }
        func walk(head: UInt16, size: Int = 8, indirect: Bool = true) throws -> [GuestSegment] {
            var out: [GuestSegment] = []
            try ChainWalker.walk(table: UnsafeRawPointer(bytes.baseAddress!), size: size, head: head, memory: memory,
                                 indirect: indirect, queue: 0, into: &out)
            return out
        }
    }

    func ringError(_ body: () throws -> Void) -> String? {
        do { try body() } catch let VhostUserError.ring(_, why) { return why } catch { return "other: \(error)" }
        return nil
    }

    @Test func walksDirectAndIndirectChains() throws {
        let m = Memory()
        m.put(0, addr: m.guest + 0x1000, len: 16, flags: 1, next: 1)
        m.put(1, addr: m.guest + 0x2000, len: 512, flags: 3, next: 2)
        m.put(2, addr: m.guest + 0x3000, len: 1, flags: 2, next: 0)
        let s = try m.walk(head: 0)
        #expect(s.map(\.length) == [16, 512, 1] && s.map(\.writable) == [false, true, true])
        #expect(s[1].address == UInt(bitPattern: m.bytes.baseAddress! + 0x2000))
        // An indirect table at 0x4000 with two entries.
        m.put(0, table: 0x4000, addr: m.guest + 0x1000, len: 16, flags: 1, next: 1)
        m.put(1, table: 0x4000, addr: m.guest + 0x3000, len: 1, flags: 2, next: 0)
        m.put(5, addr: m.guest + 0x4000, len: 32, flags: 4, next: 0)
        #expect(try m.walk(head: 5).map(\.length) == [16, 1])
    }

    @Test func refusesLoopsBadIndicesAndOutsideAddresses() {
        let m = Memory()
        m.put(0, addr: m.guest, len: 16, flags: 1, next: 1)
        m.put(1, addr: m.guest, len: 16, flags: 1, next: 0)
        #expect(ringError { _ = try m.walk(head: 0) }?.contains("loop") == true)
        m.put(2, addr: m.guest, len: 16, flags: 1, next: 2)
        #expect(ringError { _ = try m.walk(head: 2) }?.contains("loop") == true)
        #expect(ringError { _ = try m.walk(head: 8) }?.contains("head") == true)
        m.put(3, addr: m.guest, len: 16, flags: 1, next: 9)
        #expect(ringError { _ = try m.walk(head: 3) }?.contains("next index") == true)
        m.put(4, addr: m.guest + 0xfff0, len: 32, flags: 0, next: 0)
        #expect(ringError { _ = try m.walk(head: 4) }?.contains("outside guest memory") == true)
        m.put(4, addr: 0x100, len: 16, flags: 0, next: 0)
        #expect(ringError { _ = try m.walk(head: 4) }?.contains("outside guest memory") == true)
        m.put(4, addr: UInt64.max - 4, len: 16, flags: 0, next: 0)
        #expect(ringError { _ = try m.walk(head: 4) }?.contains("outside guest memory") == true)
    }

    @Test func refusesBadIndirectTables() {
        let m = Memory()
        m.put(0, table: 0x4000, addr: m.guest + 0x4000, len: 16, flags: 4, next: 0)
        m.put(0, addr: m.guest + 0x4000, len: 16, flags: 4, next: 0)
        #expect(ringError { _ = try m.walk(head: 0) }?.contains("inside an indirect") == true)
        #expect(ringError { _ = try m.walk(head: 0, indirect: false) }?.contains("not negotiated") == true)
        m.put(1, addr: m.guest + 0x4000, len: 24, flags: 4, next: 0)
        #expect(ringError { _ = try m.walk(head: 1) }?.contains("indirect table of 24") == true)
        m.put(2, addr: m.guest + 0x4000, len: 16, flags: 5, next: 3)
        #expect(ringError { _ = try m.walk(head: 2) }?.contains("NEXT") == true)
        m.put(3, addr: m.guest + 0xfff0, len: 32, flags: 4, next: 0)
        #expect(ringError { _ = try m.walk(head: 3) }?.contains("outside guest memory") == true)
        // A loop inside the indirect table.
        m.put(0, table: 0x5000, addr: m.guest, len: 16, flags: 1, next: 1)
        m.put(1, table: 0x5000, addr: m.guest, len: 16, flags: 1, next: 0)
        m.put(4, addr: m.guest + 0x5000, len: 32, flags: 4, next: 0)
        #expect(ringError { _ = try m.walk(head: 4) }?.contains("loop") == true)
    }
}

/// Random descriptor tables (the fuzz target's property, run briefly under the unit tests):
/// a walk fails or yields segments inside guest memory, and serving them stays inside.
@Suite struct RandomChainTests {
    @Test func randomTablesNeverEscapeGuestMemory() {
        let size = 4096
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { bytes.deallocate() }
        let memory = GuestMemory.unowned([(guestAddress: 0x1000, userAddress: 0, bytes: bytes)])
        let disk = VirtioBlkDisk(file: MemoryFile(bytes: [UInt8](repeating: 0, count: 1 << 16)), readOnly: false, serial: "r")
        var x: UInt64 = 0x9e3779b97f4a7c15
        func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
        var walked = 0
        for _ in 0..<3000 {
            for i in 0..<(size / 8) { bytes.storeBytes(of: next(), toByteOffset: 8 * i, as: UInt64.self) }
            // Bias descriptors toward plausible ones: addresses inside memory, small lengths and indices.
            for d in 0..<16 where next() % 4 != 0 {
                let p = bytes.baseAddress! + 16 * d
                p.storeBytes(of: 0x1000 + next() % UInt64(size + 64), as: UInt64.self)
                p.storeBytes(of: UInt32(next() % 600), toByteOffset: 8, as: UInt32.self)
                p.storeBytes(of: UInt16(next() % 8), toByteOffset: 12, as: UInt16.self)
                p.storeBytes(of: UInt16(next() % 18), toByteOffset: 14, as: UInt16.self)
            }
            var segments: [GuestSegment] = []
            do {
                try ChainWalker.walk(table: UnsafeRawPointer(bytes.baseAddress!), size: 16, head: UInt16(next() % 17),
                                     memory: memory, indirect: true, queue: 0, into: &segments)
            } catch { continue }
            walked += 1
            let lo = UInt(bitPattern: bytes.baseAddress!)
            #expect(segments.allSatisfy { $0.address >= lo && $0.address + UInt($0.length) <= lo + UInt(size) })
            _ = disk.handle(segments) { _ in }
        }
        #expect(walked > 100)
    }
}
