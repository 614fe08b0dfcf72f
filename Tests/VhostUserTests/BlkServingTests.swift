import BlockIO
import Glibc
import Testing
@testable import VhostUser

/// End to end over the socket: a test front-end sets up guest memory and virtqueues and
/// sends virtio-blk requests; results are checked against an in-memory disk.
@Suite struct BlkServingTests {
    static let diskSize = 1 << 20

    struct Setup {
        let file: MemoryFile
        let fixture: ServerFixture
        let client: TestFrontEnd
        let ram: GuestRAM
        let queues: [DriverQueue]
        let features: UInt64
    }

    func setUp(readOnly: Bool = false, queues: Int = 1, serverQueues: Int = 2, size: Int = 64, without: UInt64 = 0) throws -> Setup {
        let file = MemoryFile(bytes: pattern(Self.diskSize, seed: 7), name: "disk")
        let fixture = try ServerFixture(file: file, readOnly: readOnly, queues: serverQueues)
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        let features = try client.handshake(ram: ram, without: without)
        let qs = (0..<queues).map { DriverQueue(index: $0, size: size, ram: ram) }
        for q in qs { try client.startQueue(q) }
        return Setup(file: file, fixture: fixture, client: client, ram: ram, queues: qs, features: features)
    }

    /// Submits one request on `q`, kicks, and waits for its used entry.
    @discardableResult
    func run(_ s: Setup, _ req: BlkRequest, queue: Int = 0, indirect: Bool = false) throws -> (id: UInt32, len: UInt32) {
        let q = s.queues[queue]
        let head = q.addChain(req.chain, indirect: indirect)
        q.publish(head)
        q.doKick()
        let used = try #require(q.waitUsed(1))
        #expect(used[0].id == UInt32(head))
        return used[0]
    }

    @Test func featuresAndConfigDescribeTheDisk() throws {
        let s = try setUp(queues: 0)
        let f = try s.client.get64(VhostUserRequest.getFeatures)
        for bit in [VirtioFeature.version1, VirtioFeature.ringIndirectDesc, VirtioFeature.ringEventIdx, VirtioFeature.protocolFeatures,
                    VirtioFeature.blkFlush, VirtioFeature.blkDiscard, VirtioFeature.blkWriteZeroes, VirtioFeature.blkMultiQueue,
                    VirtioFeature.blkBlockSize, VirtioFeature.blkSegMax] {
            #expect(f & bit != 0)
        }
        #expect(f & VirtioFeature.blkReadOnly == 0)
        #expect(try s.client.get64(VhostUserRequest.getQueueNum) == 2)
        let proto = try s.client.get64(VhostUserRequest.getProtocolFeatures)
        #expect(proto == VhostUserProtocolFeature.multiQueue | VhostUserProtocolFeature.replyAck | VhostUserProtocolFeature.config
                | VhostUserProtocolFeature.inflightShmem)
        let config = try s.client.getConfig()
        #expect(config.count == 60)
        config.withUnsafeBytes { c in
            #expect(c.loadUnaligned(as: UInt64.self) == UInt64(Self.diskSize / 512))
            #expect(c.loadUnaligned(fromByteOffset: 12, as: UInt32.self) == 126) // seg_max
            #expect(c.loadUnaligned(fromByteOffset: 20, as: UInt32.self) == 512) // blk_size
            #expect(c.loadUnaligned(fromByteOffset: 34, as: UInt16.self) == 2) // num_queues
            #expect(c.loadUnaligned(fromByteOffset: 36, as: UInt32.self) > 0) // max_discard_sectors
            #expect(c.loadUnaligned(fromByteOffset: 52, as: UInt32.self) == 16) // max_write_zeroes_seg
        }
        // A window of the config space.
        let part = try s.client.getConfig(offset: 34, size: 2)
        #expect(part == [2, 0])
        // SET_CONFIG: well-formed, refused with a nack, the connection stays.
        var w = PayloadWriter()
        w.u32(32); w.u32(1); w.u32(0); w.u8(1)
        #expect(try s.client.request(VhostUserRequest.setConfig, w.bytes) == 1)
        #expect(try s.client.get64(VhostUserRequest.getQueueNum) == 2)
    }

    @Test func readsAndWritesMatchTheDisk() throws {
        let s = try setUp()
        // Read 8 sectors at sector 3 into two buffers.
        let read = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 3, dataLengths: [1024, 3072], deviceWrites: true)
        let used = try run(s, read)
        #expect(read.statusByte(s.ram) == VirtioBlk.statusOK)
        #expect(used.len == 4097)
        #expect(read.dataBytes(s.ram) == Array(s.file.bytes[1536..<(1536 + 4096)]))
        // Write 3 sectors at sector 100.
        let data = pattern(1536, seed: 99)
        let write = BlkRequest(ram: s.ram, type: VirtioBlk.typeOut, sector: 100, dataLengths: [512, 1024], deviceWrites: false)
        write.fill(s.ram, data)
        #expect(try run(s, write).len == 1)
        #expect(write.statusByte(s.ram) == VirtioBlk.statusOK)
        #expect(Array(s.file.bytes[51200..<(51200 + 1536)]) == data)
        // Read it back; the call eventfd was signalled.
        let back = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 100, dataLengths: [1536], deviceWrites: true)
        try run(s, back)
        #expect(back.dataBytes(s.ram) == data)
        #expect(s.queues[0].takeCalls() > 0)
        // The last sector reads; one past it is an I/O error; so is a length that is not whole sectors.
        let last = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: UInt64(Self.diskSize / 512 - 1), dataLengths: [512], deviceWrites: true)
        try run(s, last)
        #expect(last.statusByte(s.ram) == VirtioBlk.statusOK)
        let past = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: UInt64(Self.diskSize / 512 - 1), dataLengths: [1024], deviceWrites: true)
        #expect(try run(s, past).len == 1)
        #expect(past.statusByte(s.ram) == VirtioBlk.statusIOError)
        let far = BlkRequest(ram: s.ram, type: VirtioBlk.typeOut, sector: UInt64.max / 256, dataLengths: [512], deviceWrites: false)
        try run(s, far)
        #expect(far.statusByte(s.ram) == VirtioBlk.statusIOError)
        let odd = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [100], deviceWrites: true)
        try run(s, odd)
        #expect(odd.statusByte(s.ram) == VirtioBlk.statusIOError)
    }

    @Test func flushDiscardWriteZeroesAndGetID() throws {
        let s = try setUp()
        let flush = BlkRequest(ram: s.ram, type: VirtioBlk.typeFlush, sector: 0, dataLengths: [], deviceWrites: false)
        try run(s, flush)
        #expect(flush.statusByte(s.ram) == VirtioBlk.statusOK)
        let id = BlkRequest(ram: s.ram, type: VirtioBlk.typeGetID, sector: 0, dataLengths: [20], deviceWrites: true)
        #expect(try run(s, id).len == 21)
        #expect(id.statusByte(s.ram) == VirtioBlk.statusOK)
        #expect(id.dataBytes(s.ram) == Array("obd-test-serial".utf8) + [0, 0, 0, 0, 0])
        func ranges(_ type: UInt32, _ rs: [(UInt64, UInt32, UInt32)]) -> BlkRequest {
            let r = BlkRequest(ram: s.ram, type: type, sector: 0, dataLengths: [16 * rs.count], deviceWrites: false)
            var w = PayloadWriter()
            for x in rs { w.u64(x.0); w.u32(x.1); w.u32(x.2) }
            r.fill(s.ram, w.bytes)
            return r
        }
        let discard = ranges(VirtioBlk.typeDiscard, [(8, 2, 0), (20, 1, 0)])
        try run(s, discard)
        #expect(discard.statusByte(s.ram) == VirtioBlk.statusOK)
        #expect(s.file.bytes[4096..<5120].allSatisfy { $0 == 0 } && s.file.bytes[10240..<10752].allSatisfy { $0 == 0 })
        #expect(s.file.bytes[5120..<5632].contains { $0 != 0 })
        let zeroes = ranges(VirtioBlk.typeWriteZeroes, [(40, 4, VirtioBlk.flagUnmap)])
        try run(s, zeroes)
        #expect(zeroes.statusByte(s.ram) == VirtioBlk.statusOK)
        #expect(s.file.bytes[20480..<22528].allSatisfy { $0 == 0 })
        // Discard has no flags; unknown write-zeroes flags; a range past the end; too many segments.
        let flagged = ranges(VirtioBlk.typeDiscard, [(0, 1, 1)])
        try run(s, flagged)
        #expect(flagged.statusByte(s.ram) == VirtioBlk.statusUnsupported)
        let unknown = ranges(VirtioBlk.typeWriteZeroes, [(0, 1, 2)])
        try run(s, unknown)
        #expect(unknown.statusByte(s.ram) == VirtioBlk.statusUnsupported)
        let past = ranges(VirtioBlk.typeWriteZeroes, [(UInt64(Self.diskSize / 512) - 1, 2, 0)])
        try run(s, past)
        #expect(past.statusByte(s.ram) == VirtioBlk.statusIOError)
        let many = ranges(VirtioBlk.typeDiscard, Array(repeating: (0, 1, 0), count: 17))
        try run(s, many)
        #expect(many.statusByte(s.ram) == VirtioBlk.statusIOError)
        let torn = BlkRequest(ram: s.ram, type: VirtioBlk.typeDiscard, sector: 0, dataLengths: [8], deviceWrites: false)
        try run(s, torn)
        #expect(torn.statusByte(s.ram) == VirtioBlk.statusIOError)
        // An unknown request type.
        let other = BlkRequest(ram: s.ram, type: 77, sector: 0, dataLengths: [], deviceWrites: false)
        try run(s, other)
        #expect(other.statusByte(s.ram) == VirtioBlk.statusUnsupported)
    }

    @Test func readOnlyDisksRefuseWrites() throws {
        let s = try setUp(readOnly: true)
        #expect(s.features & VirtioFeature.blkReadOnly != 0)
        #expect(s.features & VirtioFeature.blkDiscard == 0)
        let before = s.file.bytes
        let write = BlkRequest(ram: s.ram, type: VirtioBlk.typeOut, sector: 0, dataLengths: [512], deviceWrites: false)
        try run(s, write)
        #expect(write.statusByte(s.ram) == VirtioBlk.statusIOError)
        for type in [VirtioBlk.typeDiscard, VirtioBlk.typeWriteZeroes] {
            let r = BlkRequest(ram: s.ram, type: type, sector: 0, dataLengths: [16], deviceWrites: false)
            var w = PayloadWriter()
            w.u64(0); w.u32(1); w.u32(0)
            r.fill(s.ram, w.bytes)
            try run(s, r)
            #expect(r.statusByte(s.ram) == VirtioBlk.statusIOError)
        }
        let read = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        try run(s, read)
        #expect(read.statusByte(s.ram) == VirtioBlk.statusOK)
        #expect(s.file.bytes == before)
    }

    @Test func indirectDescriptors() throws {
        let s = try setUp()
        let data = pattern(2048, seed: 5)
        let write = BlkRequest(ram: s.ram, type: VirtioBlk.typeOut, sector: 10, dataLengths: [512, 512, 1024], deviceWrites: false)
        write.fill(s.ram, data)
        try run(s, write, indirect: true)
        #expect(write.statusByte(s.ram) == VirtioBlk.statusOK)
        let read = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 10, dataLengths: [1536, 512], deviceWrites: true)
        #expect(try run(s, read, indirect: true).len == 2049)
        #expect(read.dataBytes(s.ram) == data)
    }

    @Test func eventIndexSuppressesAndRequestsNotifications() throws {
        let s = try setUp()
        #expect(s.features & VirtioFeature.ringEventIdx != 0)
        let q = s.queues[0]
        _ = q.takeCalls()
        // used_event far ahead: the back-end completes the request without calling.
        q.setUsedEvent(1000)
        let r1 = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        try run(s, r1)
        usleep(50_000)
        #expect(q.takeCalls() == 0)
        // The back-end publishes avail_event = the next slot it waits for.
        #expect(q.availEvent == q.availIdx)
        // used_event = the index of the next completion: it calls.
        q.setUsedEvent(q.usedIdx)
        let r2 = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 1, dataLengths: [512], deviceWrites: true)
        try run(s, r2)
        let deadline = now() + 5
        var calls: UInt64 = 0
        while calls == 0 && now() < deadline { calls = q.takeCalls(); usleep(1000) }
        #expect(calls > 0)
    }

    @Test func withoutEventIndexTheNoInterruptFlagIsHonoured() throws {
        let s = try setUp(without: VirtioFeature.ringEventIdx)
        let q = s.queues[0]
        _ = q.takeCalls()
        q.setAvailFlags(1)
        let r1 = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        try run(s, r1)
        usleep(50_000)
        #expect(q.takeCalls() == 0)
        q.setAvailFlags(0)
        let r2 = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        try run(s, r2)
        let deadline = now() + 5
        var calls: UInt64 = 0
        while calls == 0 && now() < deadline { calls = q.takeCalls(); usleep(1000) }
        #expect(calls > 0)
    }

    @Test func twoQueuesAtOnce() throws {
        let s = try setUp(queues: 2)
        // Many requests on both queues, submitted before one kick each.
        var reqs: [[BlkRequest]] = [[], []]
        for qi in 0..<2 {
            for i in 0..<20 {
                let sector = UInt64(qi * 400 + i * 8)
                let r = BlkRequest(ram: s.ram, type: VirtioBlk.typeOut, sector: sector, dataLengths: [4096], deviceWrites: false)
                r.fill(s.ram, pattern(4096, seed: sector + 1))
                s.queues[qi].publish(s.queues[qi].addChain(r.chain))
                reqs[qi].append(r)
            }
        }
        s.queues[0].doKick()
        s.queues[1].doKick()
        for qi in 0..<2 {
            let used = try #require(s.queues[qi].waitUsed(20))
            #expect(used.allSatisfy { $0.len == 1 })
            #expect(reqs[qi].allSatisfy { $0.statusByte(s.ram) == VirtioBlk.statusOK })
        }
        let bytes = s.file.bytes
        for qi in 0..<2 {
            for i in 0..<20 {
                let sector = qi * 400 + i * 8
                #expect(Array(bytes[(sector * 512)..<(sector * 512 + 4096)]) == pattern(4096, seed: UInt64(sector) + 1))
            }
        }
    }

    @Test func stopAndRestartAQueueKeepsItsPlace() throws {
        let s = try setUp()
        let r1 = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        try run(s, r1)
        try s.client.sendRaw(request: VhostUserRequest.getVringBase, payload: TestFrontEnd.state(0, 0))
        let (h, p) = try s.client.receiveReply()
        #expect(h.request == VhostUserRequest.getVringBase && p == TestFrontEnd.state(0, 1))
        // Stopped: a request sits in the ring untouched.
        let r2 = BlkRequest(ram: s.ram, type: VirtioBlk.typeIn, sector: 2, dataLengths: [512], deviceWrites: true)
        let q = s.queues[0]
        q.publish(q.addChain(r2.chain))
        q.doKick()
        usleep(50_000)
        #expect(r2.statusByte(s.ram) == 0xff)
        // A new kick descriptor restarts it from the base, and the waiting request is served.
        #expect(try s.client.request(VhostUserRequest.setVringBase, TestFrontEnd.state(0, 1)) == 0)
        #expect(try s.client.request(VhostUserRequest.setVringKick, TestFrontEnd.u64(0), fds: [q.kick]) == 0)
        #expect(q.waitUsed(1) != nil)
        #expect(r2.statusByte(s.ram) == VirtioBlk.statusOK)
    }

    @Test func servesTheNextFrontEndAfterADisconnect() throws {
        let file = MemoryFile(bytes: pattern(Self.diskSize, seed: 3), name: "disk")
        let fixture = try ServerFixture(file: file)
        for round in 0..<3 {
            let client = try TestFrontEnd(path: fixture.path)
            let ram = GuestRAM()
            _ = try client.handshake(ram: ram)
            let q = DriverQueue(index: 0, size: 16, ram: ram)
            try client.startQueue(q)
            let r = BlkRequest(ram: ram, type: VirtioBlk.typeOut, sector: UInt64(round), dataLengths: [512], deviceWrites: false)
            r.fill(ram, [UInt8](repeating: UInt8(round + 1), count: 512))
            q.publish(q.addChain(r.chain))
            q.doKick()
            #expect(q.waitUsed(1) != nil)
            #expect(r.statusByte(ram) == VirtioBlk.statusOK)
        }
        #expect(fixture.server.sessionsServed == 3)
        #expect(Array(file.bytes[0..<1536]) == [UInt8](repeating: 1, count: 512) + [UInt8](repeating: 2, count: 512) + [UInt8](repeating: 3, count: 512))
    }
}
