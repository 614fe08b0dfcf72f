import BlockIO
import CEventFD
import Glibc
import Testing
@testable import VhostUser

/// A front-end (or guest) that breaks the rules: the back-end closes the connection or
/// stops the queue or answers with an error status, logs why, and keeps serving.
@Suite struct HostileFrontEndTests {
    func server(readOnly: Bool = false) throws -> (MemoryFile, ServerFixture) {
        let file = MemoryFile(bytes: pattern(1 << 20, seed: 11), name: "disk")
        return (file, try ServerFixture(file: file, readOnly: readOnly))
    }

    /// After a hostile connection, a well-behaved front-end still gets served.
    func stillServes(_ fixture: ServerFixture) throws {
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        let q = DriverQueue(index: 0, size: 8, ram: ram)
        try client.startQueue(q)
        let r = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        q.publish(q.addChain(r.chain))
        q.doKick()
        #expect(q.waitUsed(1) != nil)
        #expect(r.statusByte(ram) == VirtioBlk.statusOK)
    }

    @Test func malformedMessagesCloseTheConnection() throws {
        let (_, fixture) = try server()
        let cases: [(String, (TestFrontEnd) throws -> Void)] = [
            ("unknown", { try $0.sendRaw(request: 200) }),
            ("protocol version 2", { try $0.sendRaw(request: 1, flags: 2) }),
            ("reply flag", { try $0.sendRaw(request: 1, flags: 5) }),
            ("unknown flag bits", { try $0.sendRaw(request: 1, flags: 0x101) }),
            ("exceeds", { try $0.sendRaw(request: 2, payload: [], size: 1 << 20) }),
            ("expected 8", { try $0.sendRaw(request: 2, payload: [1, 2, 3, 4]) }),
            ("file descriptors", { try $0.sendRaw(request: 1, fds: [0]) }),
            ("file descriptors", { try $0.sendRaw(request: 12, payload: TestFrontEnd.u64(0), fds: [0, 1]) }),
            ("more than 8 file descriptors", { try $0.sendRaw(request: 5, payload: [], fds: Array(repeating: 0, count: 12)) }),
            ("inside a header", { c in
                _ = [UInt8](repeating: 1, count: 5).withUnsafeBytes { send(c.fd, $0.baseAddress, 5, 0) }
                shutdown(c.fd, Int32(SHUT_WR))
            }),
            ("inside a payload", { c in
                try c.channel.send(VhostUserHeader(request: 2, flags: 1, size: 8).bytes + [1, 2])
                shutdown(c.fd, Int32(SHUT_WR))
            }),
        ]
        for (expected, send) in cases {
            let client = try TestFrontEnd(path: fixture.path)
            try send(client)
            #expect(client.isClosed(), "\(expected)")
            #expect(fixture.waitLogged(expected), "\(expected)")
        }
        try stillServes(fixture)
    }

    @Test func badMemoryTablesAreRefused() throws {
        let (_, fixture) = try server()
        let ram = GuestRAM(size: 1 << 20)
        func region(_ g: UInt64, _ s: UInt64, _ u: UInt64, _ o: UInt64 = 0) -> MemoryRegionDescription {
            MemoryRegionDescription(guestAddress: g, size: s, userAddress: u, mmapOffset: o, fd: ram.fd)
        }
        // Structurally bad: the connection closes.
        let structural: [(String, [MemoryRegionDescription], [Int32])] = [
            ("size 0", [region(0, 0, 0)], [ram.fd]),
            ("overlap", [region(0, 8192, 0), region(4096, 4096, 1 << 30)], [ram.fd, ram.fd]),
            ("file descriptors", [region(0, 4096, 0)], []),
            ("wraps", [region(UInt64.max - 100, 4096, 0)], [ram.fd]),
        ]
        for (expected, regions, fds) in structural {
            let client = try TestFrontEnd(path: fixture.path)
            try client.sendRaw(request: VhostUserRequest.setMemTable, payload: TestFrontEnd.memTable(regions), fds: fds)
            #expect(client.isClosed(), "\(expected)")
            #expect(fixture.waitLogged(expected), "\(expected)")
        }
        // Well-formed but impossible: larger than its file (touching it would raise SIGBUS), or not a
        // regular file. With REPLY_ACK the front-end gets a nack and the connection stays.
        let client = try TestFrontEnd(path: fixture.path)
        try client.request(VhostUserRequest.setProtocolFeatures, TestFrontEnd.u64(VhostUserProtocolFeature.replyAck), ack: false)
        #expect(try client.request(VhostUserRequest.setMemTable, TestFrontEnd.memTable([region(0, 2 << 20, 0)]), fds: [ram.fd]) == 1)
        #expect(try client.request(VhostUserRequest.setMemTable, TestFrontEnd.memTable([region(0, 4096, 0, 1 << 20)]), fds: [ram.fd]) == 1)
        var pipeFDs: [Int32] = [0, 0]
        pipe(&pipeFDs)
        defer { close(pipeFDs[0]); close(pipeFDs[1]) }
        #expect(try client.request(VhostUserRequest.setMemTable, TestFrontEnd.memTable([region(0, 4096, 0)]), fds: [pipeFDs[0]]) == 1)
        #expect(fixture.logged("does not hold"))
        client.close()
        // Without REPLY_ACK the failure closes the connection.
        let silent = try TestFrontEnd(path: fixture.path)
        try silent.sendRaw(request: VhostUserRequest.setMemTable, payload: TestFrontEnd.memTable([region(0, 2 << 20, 0)]), fds: [ram.fd])
        #expect(silent.isClosed())
        try stillServes(fixture)
    }

    @Test func vringMessagesOnUnconfiguredOrMissingQueuesAreRefused() throws {
        let (_, fixture) = try server()
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        // Queue 5 does not exist (2 queues).
        #expect(try client.request(VhostUserRequest.setVringNum, TestFrontEnd.state(5, 8)) == 1)
        #expect(try client.request(VhostUserRequest.setVringEnable, TestFrontEnd.state(5, 1)) == 1)
        let efd = obd_eventfd(0, obd_efd_cloexec())
        #expect(try client.request(VhostUserRequest.setVringKick, TestFrontEnd.u64(5), fds: [efd]) == 1)
        close(efd)
        // Bad sizes; addresses before a size; addresses outside the memory table.
        #expect(try client.request(VhostUserRequest.setVringNum, TestFrontEnd.state(0, 0)) == 1)
        #expect(try client.request(VhostUserRequest.setVringNum, TestFrontEnd.state(0, 100)) == 1)
        #expect(try client.request(VhostUserRequest.setVringNum, TestFrontEnd.state(0, 65536)) == 1)
        var w = PayloadWriter()
        w.u32(1); w.u32(0); w.u64(ram.userBase); w.u64(ram.userBase + 4096); w.u64(ram.userBase + 8192); w.u64(0)
        #expect(try client.request(VhostUserRequest.setVringAddr, w.bytes) == 1)
        #expect(try client.request(VhostUserRequest.setVringNum, TestFrontEnd.state(1, 8)) == 0)
        var outside = PayloadWriter()
        outside.u32(1); outside.u32(0); outside.u64(0x1000); outside.u64(0x2000); outside.u64(0x3000); outside.u64(0)
        #expect(try client.request(VhostUserRequest.setVringAddr, outside.bytes) == 1)
        var unaligned = PayloadWriter()
        unaligned.u32(1); unaligned.u32(0); unaligned.u64(ram.userBase + 8); unaligned.u64(ram.userBase + 4096); unaligned.u64(ram.userBase + 8192); unaligned.u64(0)
        #expect(try client.request(VhostUserRequest.setVringAddr, unaligned.bytes) == 1)
        var tail = PayloadWriter()
        tail.u32(1); tail.u32(0); tail.u64(ram.userBase + UInt64(ram.size) - 64); tail.u64(ram.userBase); tail.u64(ram.userBase + 4096); tail.u64(0)
        #expect(try client.request(VhostUserRequest.setVringAddr, tail.bytes) == 1)
        #expect(fixture.logged("outside the memory table"))
        // Kicking a queue that has a kick descriptor but no addresses does nothing, and the session goes on.
        let kick = obd_eventfd(0, obd_efd_cloexec())
        #expect(try client.request(VhostUserRequest.setVringKick, TestFrontEnd.u64(1), fds: [kick]) == 0)
        var one: UInt64 = 1
        _ = write(kick, &one, 8)
        close(kick)
        #expect(try client.get64(VhostUserRequest.getQueueNum) == 2)
        // Features never offered.
        #expect(try client.request(VhostUserRequest.setFeatures, TestFrontEnd.u64(1 << 40)) == 1)
        #expect(try client.request(VhostUserRequest.setProtocolFeatures, TestFrontEnd.u64(1 << 20)) == 1)
        // The good queue still works.
        let q = DriverQueue(index: 0, size: 8, ram: ram)
        try client.startQueue(q)
        let r = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        q.publish(q.addChain(r.chain))
        q.doKick()
        #expect(q.waitUsed(1) != nil)
    }

    /// Sets up one queue with an err eventfd; returns it.
    func brokenQueueSetup(_ fixture: ServerFixture) throws -> (TestFrontEnd, GuestRAM, DriverQueue, Int32) {
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        let q = DriverQueue(index: 0, size: 8, ram: ram)
        let err = obd_eventfd(0, obd_efd_cloexec() | obd_efd_nonblock())
        #expect(try client.request(VhostUserRequest.setVringErr, TestFrontEnd.u64(0), fds: [err]) == 0)
        try client.startQueue(q)
        return (client, ram, q, err)
    }

    func waitSignalled(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 5000) == 1
    }

    @Test func hostileRingsStopTheQueueNotTheServer() throws {
        let (file, fixture) = try server()
        let before = file.bytes
        let cases: [(String, (GuestRAM, DriverQueue) -> Void)] = [
            ("outside guest memory", { ram, q in
                q.setDescriptor(0, addr: ram.guestBase + UInt64(ram.size) - 8, len: 16, flags: 0, next: 0)
                q.publish(0)
            }),
            ("outside guest memory", { _, q in
                q.setDescriptor(0, addr: 0x1000, len: 16, flags: 0, next: 0)
                q.publish(0)
            }),
            ("a loop", { ram, q in
                let h = ram.alloc(16)
                q.setDescriptor(0, addr: h, len: 16, flags: 1, next: 1)
                q.setDescriptor(1, addr: h, len: 16, flags: 1, next: 2)
                q.setDescriptor(2, addr: h, len: 16, flags: 1, next: 0)
                q.publish(0)
            }),
            ("next index 9", { ram, q in
                q.setDescriptor(0, addr: ram.alloc(16), len: 16, flags: 1, next: 9)
                q.publish(0)
            }),
            ("chain head 12", { _, q in q.publish(12) }),
            ("ahead of", { _, q in q.forceAvailIdx(200) }),
            ("inside an indirect table", { ram, q in
                let table = ram.alloc(16)
                q.setDescriptor(0, addr: table, len: 16, flags: 4, next: 0, table: table)
                q.setDescriptor(0, addr: table, len: 16, flags: 4, next: 0)
                q.publish(0)
            }),
        ]
        for (expected, poison) in cases {
            let (client, ram, q, err) = try brokenQueueSetup(fixture)
            poison(ram, q)
            q.doKick()
            #expect(fixture.waitLogged(expected), "\(expected)")
            #expect(waitSignalled(err), "\(expected): err eventfd")
            #expect(q.usedIdx == 0, "\(expected)")
            // The session still answers, and a stopped queue reports where it got to.
            #expect(try client.get64(VhostUserRequest.getQueueNum) == 2)
            close(err)
        }
        #expect(file.bytes == before)
        try stillServes(fixture)
    }

    @Test func malformedRequestsGetAZeroLengthCompletion() throws {
        let (file, fixture) = try server()
        let before = file.bytes
        let (client, ram, q, err) = try brokenQueueSetup(fixture)
        defer { close(err); client.close() }
        // No status byte (nothing device-writable), a header of 8 bytes, a readable buffer after a writable one.
        let header = ram.alloc(16)
        q.setDescriptor(0, addr: header, len: 16, flags: 0, next: 0)
        q.publish(0)
        q.setDescriptor(1, addr: header, len: 8, flags: 1, next: 2)
        q.setDescriptor(2, addr: ram.alloc(1), len: 1, flags: 2, next: 0)
        q.publish(1)
        q.setDescriptor(3, addr: header, len: 16, flags: 1, next: 4)
        q.setDescriptor(4, addr: ram.alloc(512), len: 512, flags: 3, next: 5)
        q.setDescriptor(5, addr: ram.alloc(512), len: 512, flags: 0, next: 0)
        q.publish(3)
        q.doKick()
        let used = try #require(q.waitUsed(3))
        #expect(used.map(\.id) == [0, 1, 3] && used.allSatisfy { $0.len == 0 })
        #expect(fixture.logged("no device-writable byte") && fixture.logged("header has 8 of 16") && fixture.logged("follows a device-writable"))
        // Oversized: a write far larger than the disk, a read whose length overflows the capacity.
        let big = BlkRequest(ram: ram, type: VirtioBlk.typeOut, sector: 0, dataLengths: [2 << 20], deviceWrites: false)
        q.publish(q.addChain(big.chain))
        q.doKick()
        #expect(q.waitUsed(1) != nil)
        #expect(big.statusByte(ram) == VirtioBlk.statusIOError)
        #expect(file.bytes == before)
    }

    @Test func requestsBeforeTheQueueIsEnabledWait() throws {
        let (_, fixture) = try server()
        let client = try TestFrontEnd(path: fixture.path)
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        let q = DriverQueue(index: 0, size: 8, ram: ram)
        try client.startQueue(q)
        #expect(try client.request(VhostUserRequest.setVringEnable, TestFrontEnd.state(0, 0)) == 0)
        let r = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 0, dataLengths: [512], deviceWrites: true)
        q.publish(q.addChain(r.chain))
        q.doKick()
        usleep(50_000)
        #expect(q.usedIdx == 0)
        #expect(try client.request(VhostUserRequest.setVringEnable, TestFrontEnd.state(0, 1)) == 0)
        #expect(q.waitUsed(1) != nil)
        #expect(r.statusByte(ram) == VirtioBlk.statusOK)
    }
}
