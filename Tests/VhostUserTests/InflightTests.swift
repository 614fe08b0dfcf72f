import BlockIO
import CEventFD
import Glibc
import Testing
@testable import VhostUser

/// INFLIGHT_SHMEM: the back-end records requests in flight in memory the front-end keeps,
/// and a new back-end completes what an old one left.
@Suite struct InflightTests {
    /// Receives a reply with one file descriptor attached.
    func replyWithFD(_ c: TestFrontEnd) throws -> ([UInt8], Int32) {
        var buf = [UInt8](repeating: 0, count: 12 + 24)
        let space = MessageChannel.controlSpace(fds: 1)
        let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: 8)
        defer { control.deallocate() }
        let n = buf.withUnsafeMutableBytes { b -> Int in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            var msg = msghdr()
            return withUnsafeMutablePointer(to: &iov) { iovp in
                msg.msg_iov = iovp
                msg.msg_iovlen = 1
                msg.msg_control = control
                msg.msg_controllen = space
                let r = recvmsg(c.fd, &msg, Int32(MSG_WAITALL))
                return r
            }
        }
        let fds = MessageChannel.descriptors(in: control, length: space)
        guard n == 36, fds.count == 1 else { throw VhostUserError.closed }
        return (Array(buf[12...]), fds[0])
    }

    func inflightRequest(_ queues: Int, _ size: Int) -> [UInt8] {
        var w = PayloadWriter()
        w.u64(0); w.u64(0); w.u16(UInt16(queues)); w.u16(UInt16(size)); w.u32(0)
        return w.bytes
    }

    @Test func requestsAreTrackedInTheSharedArea() throws {
        let file = MemoryFile(bytes: pattern(1 << 20, seed: 1), name: "disk")
        let fixture = try ServerFixture(file: file)
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        #expect(try client.get64(VhostUserRequest.getProtocolFeatures) & VhostUserProtocolFeature.inflightShmem != 0)
        try client.sendRaw(request: VhostUserRequest.getInflightFD, payload: inflightRequest(2, 16))
        let (payload, fd) = try replyWithFD(client)
        defer { close(fd) }
        let size = payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect(size == UInt64(2 * InflightRegion.queueBytes(16)))
        let area = try #require(mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        defer { munmap(area, Int(size)) }
        #expect(area.load(fromByteOffset: 8, as: UInt16.self) == 1 && area.load(fromByteOffset: 10, as: UInt16.self) == 16)
        let q = DriverQueue(index: 0, size: 16, ram: ram)
        try client.startQueue(q)
        for i in 0..<3 {
            let r = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: UInt64(i), dataLengths: [512], deviceWrites: true)
            q.publish(q.addChain(r.chain))
            q.doKick()
            #expect(q.waitUsed(1) != nil)
        }
        usleep(20_000)
        // Queue 0's area: used_idx follows the ring, nothing is left in flight, counters were given out.
        #expect(area.load(fromByteOffset: 14, as: UInt16.self) == 3)
        #expect((0..<16).allSatisfy { area.load(fromByteOffset: 16 + 16 * $0, as: UInt8.self) == 0 })
        #expect(area.load(fromByteOffset: 16 + 16 * 6 + 8, as: UInt64.self) == 3) // the third request's head is 6
    }

    @Test func aNewBackEndCompletesWhatTheOldOneLeftInFlight() throws {
        let file = MemoryFile(bytes: pattern(1 << 20, seed: 2), name: "disk")
        let fixture = try ServerFixture(file: file)
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        let q = DriverQueue(index: 0, size: 16, ram: ram)
        // What a killed back-end left: request A (head 0) completed and published but not cleared
        // (last_batch_head 0, area used_idx 0, ring used idx 1); request B (head 3) taken, not done.
        let a = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512, 512], deviceWrites: true)
        let b = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 9, dataLengths: [512], deviceWrites: true)
        let headA = q.addChain(a.chain), headB = q.addChain(b.chain)
        #expect(headA == 0 && headB == 4)
        q.publish(headA)
        q.publish(headB)
        let usedP = ram.pointer(q.used)
        usedP.storeBytes(of: UInt32(headA), toByteOffset: 4, as: UInt32.self)
        usedP.storeBytes(of: UInt32(1025), toByteOffset: 8, as: UInt32.self)
        usedP.storeBytes(of: UInt16(1), toByteOffset: 2, as: UInt16.self)
        q.lastUsed = 1
        let length = InflightRegion.queueBytes(16)
        let fd = obd_memfd_create("test-inflight", obd_mfd_cloexec())
        #expect(ftruncate(fd, off_t(2 * length)) == 0)
        let area = try #require(mmap(nil, 2 * length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        defer { munmap(area, 2 * length); close(fd) }
        area.storeBytes(of: UInt16(1), toByteOffset: 8, as: UInt16.self)
        area.storeBytes(of: UInt16(16), toByteOffset: 10, as: UInt16.self)
        area.storeBytes(of: UInt16(headA), toByteOffset: 12, as: UInt16.self) // last_batch_head
        area.storeBytes(of: UInt16(0), toByteOffset: 14, as: UInt16.self)     // used_idx (stale)
        area.storeBytes(of: UInt8(1), toByteOffset: 16 + 16 * Int(headA), as: UInt8.self)
        area.storeBytes(of: UInt64(7), toByteOffset: 16 + 16 * Int(headA) + 8, as: UInt64.self)
        area.storeBytes(of: UInt8(1), toByteOffset: 16 + 16 * Int(headB), as: UInt8.self)
        area.storeBytes(of: UInt64(8), toByteOffset: 16 + 16 * Int(headB) + 8, as: UInt64.self)
        var w = PayloadWriter()
        w.u64(UInt64(2 * length)); w.u64(0); w.u16(2); w.u16(16); w.u32(0)
        #expect(try client.request(VhostUserRequest.setInflightFD, w.bytes, fds: [fd]) == 0)
        try client.startQueue(q)
        // B is served again, A is not; the next request continues after B.
        let used = try #require(q.waitUsed(1))
        #expect(used[0].id == UInt32(headB) && used[0].len == 513)
        #expect(b.statusByte(ram) == VirtioBlk.statusOK)
        #expect(b.dataBytes(ram) == Array(file.bytes[(9 * 512)..<(10 * 512)]))
        #expect(a.statusByte(ram) == 0xff)
        let c = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 2, dataLengths: [512], deviceWrites: true)
        let headC = q.addChain(c.chain)
        q.publish(headC)
        q.doKick()
        let next = try #require(q.waitUsed(1))
        #expect(next[0].id == UInt32(headC))
        #expect(q.usedIdx == 3)
        #expect(fixture.logged("resubmitting 1 request"))
        // Everything settled in the area.
        usleep(20_000)
        #expect(area.load(fromByteOffset: 14, as: UInt16.self) == 3)
        #expect((0..<16).allSatisfy { area.load(fromByteOffset: 16 + 16 * $0, as: UInt8.self) == 0 })
    }

    @Test func badInflightAreasAreRefused() throws {
        let fixture = try ServerFixture(file: MemoryFile(bytes: [UInt8](repeating: 0, count: 65536)))
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        let fd = obd_memfd_create("small", obd_mfd_cloexec())
        #expect(ftruncate(fd, 4096) == 0)
        defer { close(fd) }
        func set(size: UInt64, offset: UInt64, queues: UInt16, queueSize: UInt16) throws -> UInt64? {
            var w = PayloadWriter()
            w.u64(size); w.u64(offset); w.u16(queues); w.u16(queueSize); w.u32(0)
            return try client.request(VhostUserRequest.setInflightFD, w.bytes, fds: [fd])
        }
        #expect(try set(size: UInt64(2 * InflightRegion.queueBytes(256)), offset: 0, queues: 2, queueSize: 256) == 1) // larger than the file
        #expect(try set(size: 100, offset: 0, queues: 1, queueSize: 4) == 1) // wrong size
        #expect(try set(size: 0, offset: 0, queues: 0, queueSize: 4) == 1)
        #expect(try set(size: UInt64(InflightRegion.queueBytes(4)), offset: 100, queues: 1, queueSize: 4) == 1) // unaligned
        #expect(try set(size: UInt64(InflightRegion.queueBytes(4)), offset: 0, queues: 1, queueSize: 4) == 0)
        try client.sendRaw(request: VhostUserRequest.getInflightFD, payload: inflightRequest(0, 0))
        #expect(client.isClosed()) // refused, and a request with a reply has no nack
    }
}
