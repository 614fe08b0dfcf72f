import Glibc
import Testing
import BlockIO
@testable import VhostUser

/// Scattered IN and OUT requests through the queue's bounce buffer (one disk read or
/// write per request) give the same guest bytes and disk bytes as one transfer per
/// buffer, and requests larger than the bounce buffer still go buffer by buffer.
@Suite struct BounceTransferTests {
    /// A request: header (readable), data buffers at scattered places (writable for IN,
    /// readable for OUT), status byte (writable). Buffers live in `arena` at `offsets`.
    static func request(arena: UnsafeMutableRawBufferPointer, type: UInt32, sector: UInt64,
                        buffers: [(offset: Int, length: Int)]) -> [GuestSegment] {
        let base = UInt(bitPattern: arena.baseAddress!)
        let header = arena.baseAddress!
        header.storeBytes(of: type.littleEndian, as: UInt32.self)
        header.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        header.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        var s = [GuestSegment(length: 16, writable: false, address: base)]
        for b in buffers { s.append(GuestSegment(length: b.length, writable: type == VirtioBlk.typeIn, address: base + UInt(b.offset))) }
        s.append(GuestSegment(length: 1, writable: true, address: base + 20))
        return s
    }

    @Test(arguments: [false, true]) func scatteredTransfersMatchPerBufferOnes(smallScratch: Bool) throws {
        var x: UInt64 = 0x2545f4914f6cdd1d
        func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
        let diskSize = 1 << 20
        var content = [UInt8](repeating: 0, count: diskSize)
        for i in 0..<diskSize { content[i] = UInt8(truncatingIfNeeded: next()) }
        let a = MemoryFile(bytes: content), b = MemoryFile(bytes: content)
        let withBounce = VirtioBlkDisk(file: a, readOnly: false, serial: "a")
        let perBuffer = VirtioBlkDisk(file: b, readOnly: false, serial: "b")
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: smallScratch ? 4096 : VirtioBlkDisk.bounceBytes, alignment: 4096)
        defer { scratch.deallocate() }
        let arenaSize = 1 << 19
        let pattern = (0..<arenaSize).map { _ in UInt8(truncatingIfNeeded: next()) }
        let arenaA = UnsafeMutableRawBufferPointer.allocate(byteCount: arenaSize, alignment: 4096)
        let arenaB = UnsafeMutableRawBufferPointer.allocate(byteCount: arenaSize, alignment: 4096)
        defer { arenaA.deallocate(); arenaB.deallocate() }
        for round in 0..<100 {
            // 1 to 40 buffers of whole sectors, in shuffled places of the arena (4 KiB slots).
            let count = Int(next() % 40) + 1
            var g = Generator(state: next())
            var slots = Array(1..<(arenaSize / 4096)).shuffled(using: &g)
            var buffers: [(offset: Int, length: Int)] = []
            var bytes = 0
            for _ in 0..<count {
                let len = 512 * (Int(next() % 8) + 1)
                buffers.append((offset: 4096 * slots.removeLast(), length: len))
                bytes += len
            }
            let sector = next() % UInt64((diskSize - bytes) / 512)
            let type = round % 2 == 0 ? VirtioBlk.typeIn : VirtioBlk.typeOut
            arenaA.copyBytes(from: pattern); arenaB.copyBytes(from: pattern)
            let ra = withBounce.handle(Self.request(arena: arenaA, type: type, sector: sector, buffers: buffers), scratch: scratch) { _ in }
            let rb = perBuffer.handle(Self.request(arena: arenaB, type: type, sector: sector, buffers: buffers)) { _ in }
            #expect(ra == rb)
            #expect(ra == .completed(status: VirtioBlk.statusOK, length: type == VirtioBlk.typeIn ? UInt32(bytes + 1) : 1))
            #expect(memcmp(arenaA.baseAddress!, arenaB.baseAddress!, arenaSize) == 0)
            if type == VirtioBlk.typeIn {
                // The guest got the disk's bytes, in buffer order.
                var at = Int(sector) * 512
                for buf in buffers {
                    #expect(memcmp(arenaA.baseAddress! + buf.offset, try a.readBytes(at: UInt64(at), count: buf.length), buf.length) == 0)
                    at += buf.length
                }
            }
        }
        #expect(try a.readBytes(at: 0, count: diskSize) == b.readBytes(at: 0, count: diskSize))
        #expect(try a.readBytes(at: 0, count: diskSize) != content)
    }

    @Test func aFailedScatteredReadIsAnIOError() throws {
        let disk = VirtioBlkDisk(file: MemoryFile(bytes: [UInt8](repeating: 7, count: 1 << 16)), readOnly: false, serial: "c")
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioBlkDisk.bounceBytes, alignment: 4096)
        let arena = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 4096)
        defer { scratch.deallocate(); arena.deallocate() }
        // Past the end of the disk: refused before any read.
        let r = disk.handle(Self.request(arena: arena, type: VirtioBlk.typeIn, sector: 127,
                                         buffers: [(4096, 512), (8192, 512)]), scratch: scratch) { _ in }
        #expect(r == .completed(status: VirtioBlk.statusIOError, length: 1))
    }
}

/// A seeded generator for shuffles.
struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state }
}
