import BlockIO
import CEventFD
import Glibc
import Synchronization
@testable import VhostUser

/// Guest RAM for tests: a memfd mapped shared, handed to the back-end as one region,
/// with a bump allocator for rings and buffers.
final class GuestRAM: @unchecked Sendable {
    let fd: Int32
    let size: Int
    let base: UnsafeMutableRawPointer
    let guestBase: UInt64 = 0x1_0000_0000
    let userBase: UInt64 = 0x7f00_0000_0000
    private var next = 0

    init(size: Int = 4 << 20) {
        fd = obd_memfd_create("obd-test-guest", obd_mfd_cloexec())
        precondition(fd >= 0)
        precondition(ftruncate(fd, off_t(size)) == 0)
        self.size = size
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        precondition(p != MAP_FAILED)
        base = p
    }

    deinit { munmap(base, size); close(fd) }

    /// Allocates `count` zeroed bytes aligned to `align`; returns the guest address.
    func alloc(_ count: Int, align: Int = 16) -> UInt64 {
        next = (next + align - 1) & ~(align - 1)
        let at = next
        next += count
        precondition(next <= size, "guest RAM exhausted")
        (base + at).initializeMemory(as: UInt8.self, repeating: 0, count: count)
        return guestBase + UInt64(at)
    }

    func pointer(_ gpa: UInt64) -> UnsafeMutableRawPointer { base + Int(gpa - guestBase) }

    func write(_ bytes: [UInt8], at gpa: UInt64) {
        bytes.withUnsafeBytes { pointer(gpa).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }

    func read(_ gpa: UInt64, _ count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer(gpa), count: count))
    }

    var region: MemoryRegionDescription {
        MemoryRegionDescription(guestAddress: guestBase, size: UInt64(size), userAddress: userBase, mmapOffset: 0, fd: fd)
    }
}

/// A virtqueue the test driver owns in guest RAM.
final class DriverQueue: @unchecked Sendable {
    let index: Int
    let size: Int
    let ram: GuestRAM
    let desc: UInt64, avail: UInt64, used: UInt64
    let kick: Int32, call: Int32
    private var freeHead = 0
    private(set) var availIdx: UInt16 = 0
    var lastUsed: UInt16 = 0

    init(index: Int, size: Int, ram: GuestRAM) {
        self.index = index
        self.size = size
        self.ram = ram
        desc = ram.alloc(16 * size, align: 16)
        avail = ram.alloc(6 + 2 * size, align: 2)
        used = ram.alloc(6 + 8 * size, align: 4)
        kick = obd_eventfd(0, obd_efd_cloexec())
        call = obd_eventfd(0, obd_efd_cloexec() | obd_efd_nonblock())
    }

    deinit { close(kick); close(call) }

    func setDescriptor(_ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16, table: UInt64? = nil) {
        let p = ram.pointer((table ?? desc) + UInt64(16 * i))
        p.storeBytes(of: addr.littleEndian, as: UInt64.self)
        p.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Writes a chain of buffers (direct, or through one indirect table) and returns its head.
    func addChain(_ buffers: [(addr: UInt64, len: UInt32, writable: Bool)], indirect: Bool = false) -> UInt16 {
        let head = freeHead
        if indirect {
            let table = ram.alloc(16 * buffers.count, align: 16)
            for (i, b) in buffers.enumerated() {
                let last = i == buffers.count - 1
                setDescriptor(i, addr: b.addr, len: b.len, flags: (last ? 0 : 1) | (b.writable ? 2 : 0),
                              next: UInt16(last ? 0 : i + 1), table: table)
            }
            setDescriptor(head, addr: table, len: UInt32(16 * buffers.count), flags: 4, next: 0)
            freeHead = (freeHead + 1) % size
        } else {
            for (i, b) in buffers.enumerated() {
                let slot = (head + i) % size
                let last = i == buffers.count - 1
                setDescriptor(slot, addr: b.addr, len: b.len, flags: (last ? 0 : 1) | (b.writable ? 2 : 0),
                              next: UInt16((slot + 1) % size))
            }
            freeHead = (freeHead + buffers.count) % size
        }
        return UInt16(head)
    }

    /// Makes `head` available (without kicking).
    func publish(_ head: UInt16) {
        let p = ram.pointer(avail)
        p.storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * (Int(availIdx) % size), as: UInt16.self)
        availIdx &+= 1
        atomicMemoryFence(ordering: .releasing)
        p.storeBytes(of: availIdx.littleEndian, toByteOffset: 2, as: UInt16.self)
    }

    /// Sets the available index directly (hostile tests).
    func forceAvailIdx(_ v: UInt16) {
        availIdx = v
        ram.pointer(avail).storeBytes(of: v.littleEndian, toByteOffset: 2, as: UInt16.self)
    }

    func setAvailFlags(_ v: UInt16) { ram.pointer(avail).storeBytes(of: v.littleEndian, as: UInt16.self) }
    func setUsedEvent(_ v: UInt16) { ram.pointer(avail).storeBytes(of: v.littleEndian, toByteOffset: 4 + 2 * size, as: UInt16.self) }
    var availEvent: UInt16 { ram.pointer(used).load(fromByteOffset: 4 + 8 * size, as: UInt16.self) }
    var usedIdx: UInt16 {
        let v = ram.pointer(used).load(fromByteOffset: 2, as: UInt16.self)
        atomicMemoryFence(ordering: .acquiring)
        return v
    }

    func doKick() {
        var one: UInt64 = 1
        _ = write(kick, &one, 8)
    }

    /// Waits until the used index reaches `count` more entries; returns them.
    func waitUsed(_ count: Int, timeout: Double = 10) -> [(id: UInt32, len: UInt32)]? {
        let deadline = now() + timeout
        while Int(usedIdx &- lastUsed) < count {
            if now() > deadline { return nil }
            usleep(200)
        }
        var out: [(UInt32, UInt32)] = []
        for _ in 0..<count {
            let at = 4 + 8 * (Int(lastUsed) % size)
            let p = ram.pointer(used)
            out.append((p.load(fromByteOffset: at, as: UInt32.self), p.load(fromByteOffset: at + 4, as: UInt32.self)))
            lastUsed &+= 1
        }
        return out
    }

    /// Reads and clears the call eventfd's counter (0 when it was not signalled).
    func takeCalls() -> UInt64 {
        var v: UInt64 = 0
        return read(call, &v, 8) == 8 ? v : 0
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The test's front-end: speaks vhost-user on the server's socket.
final class TestFrontEnd: @unchecked Sendable {
    let fd: Int32
    var channel: MessageChannel { MessageChannel(fd: fd) }

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        var tries = 0
        while true {
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc == 0 { break }
            tries += 1
            if tries > 500 { Glibc.close(fd); throw VhostUserError.system(operation: "connect", errno: errno) }
            usleep(10000)
        }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    private var closed = false

    deinit { close() }

    /// Ends the connection (a server serves one front-end at a time).
    func close() {
        if !closed { Glibc.close(fd) }
        closed = true
    }

    /// Sends a raw message (header fields as given).
    func sendRaw(request: UInt32, flags: UInt32 = VhostUserFlags.version, payload: [UInt8] = [], fds: [Int32] = [],
                 size: UInt32? = nil) throws {
        let h = VhostUserHeader(request: request, flags: flags, size: size ?? UInt32(payload.count))
        try channel.send(h.bytes + payload, fds: fds)
    }

    /// Receives one reply: header and payload.
    func receiveReply() throws -> (VhostUserHeader, [UInt8]) {
        var head = [UInt8](repeating: 0, count: 12)
        try readExactly(&head)
        let h = VhostUserHeader(request: head.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) },
                                flags: head.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) },
                                size: head.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) })
        var payload = [UInt8](repeating: 0, count: Int(h.size))
        try readExactly(&payload)
        return (h, payload)
    }

    private func readExactly(_ b: inout [UInt8]) throws {
        var done = 0
        let count = b.count
        while done < count {
            let n = b.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, count - done, 0) }
            if n == 0 { throw VhostUserError.closed }
            if n < 0 { throw VhostUserError.system(operation: "recv", errno: errno) }
            done += n
        }
    }

    /// Whether the back-end closed the connection (waits up to `timeout` seconds).
    func isClosed(timeout: Int32 = 5000) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeout) == 1 else { return false }
        var b: UInt8 = 0
        return recv(fd, &b, 1, Int32(MSG_PEEK)) == 0
    }

    /// Sends a request; with `ack`, asks for REPLY_ACK and returns the acknowledgement value.
    @discardableResult
    func request(_ r: UInt32, _ payload: [UInt8] = [], fds: [Int32] = [], ack: Bool = true) throws -> UInt64? {
        try sendRaw(request: r, flags: VhostUserFlags.version | (ack ? VhostUserFlags.needReply : 0), payload: payload, fds: fds)
        guard ack else { return nil }
        let (h, p) = try receiveReply()
        guard h.request == r, h.flags == VhostUserFlags.version | VhostUserFlags.reply, p.count == 8 else {
            throw VhostUserError.malformed(request: r, reason: "bad ack")
        }
        return p.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    /// A GET request answered by a u64.
    func get64(_ r: UInt32) throws -> UInt64 {
        try sendRaw(request: r)
        let (h, p) = try receiveReply()
        guard h.request == r, p.count == 8 else { throw VhostUserError.malformed(request: r, reason: "bad reply") }
        return p.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    func getConfig(offset: UInt32 = 0, size: UInt32 = 60) throws -> [UInt8] {
        var w = PayloadWriter()
        w.u32(offset); w.u32(size); w.u32(0)
        w.bytes += [UInt8](repeating: 0, count: Int(size))
        try sendRaw(request: VhostUserRequest.getConfig, payload: w.bytes)
        let (_, p) = try receiveReply()
        return Array(p.dropFirst(12))
    }

    static func u64(_ v: UInt64) -> [UInt8] { var w = PayloadWriter(); w.u64(v); return w.bytes }
    static func state(_ index: Int, _ num: UInt32) -> [UInt8] { var w = PayloadWriter(); w.u32(UInt32(index)); w.u32(num); return w.bytes }

    static func memTable(_ regions: [MemoryRegionDescription]) -> [UInt8] {
        var w = PayloadWriter()
        w.u32(UInt32(regions.count)); w.u32(0)
        for r in regions { w.u64(r.guestAddress); w.u64(r.size); w.u64(r.userAddress); w.u64(r.mmapOffset) }
        return w.bytes
    }

    func setMemTable(_ ram: GuestRAM) throws -> UInt64? {
        try request(VhostUserRequest.setMemTable, Self.memTable([ram.region]), fds: [ram.fd])
    }

    /// Configures and starts `q` (num, base, addresses, call, kick, enable).
    func startQueue(_ q: DriverQueue) throws {
        let i = q.index
        guard try request(VhostUserRequest.setVringNum, Self.state(i, UInt32(q.size))) == 0,
              try request(VhostUserRequest.setVringBase, Self.state(i, 0)) == 0 else { throw VhostUserError.closed }
        var w = PayloadWriter()
        w.u32(UInt32(i)); w.u32(0)
        w.u64(q.desc - q.ram.guestBase + q.ram.userBase)
        w.u64(q.used - q.ram.guestBase + q.ram.userBase)
        w.u64(q.avail - q.ram.guestBase + q.ram.userBase)
        w.u64(0)
        guard try request(VhostUserRequest.setVringAddr, w.bytes) == 0,
              try request(VhostUserRequest.setVringCall, Self.u64(UInt64(i)), fds: [q.call]) == 0,
              try request(VhostUserRequest.setVringKick, Self.u64(UInt64(i)), fds: [q.kick]) == 0,
              try request(VhostUserRequest.setVringEnable, Self.state(i, 1)) == 0 else { throw VhostUserError.closed }
    }

    /// The usual handshake: features (all offered but `without`), protocol features, owner, memory.
    func handshake(ram: GuestRAM, without: UInt64 = 0) throws -> UInt64 {
        let offered = try get64(VhostUserRequest.getFeatures)
        let features = offered & ~without
        try request(VhostUserRequest.setFeatures, Self.u64(features), ack: false)
        let proto = try get64(VhostUserRequest.getProtocolFeatures)
        try request(VhostUserRequest.setProtocolFeatures, Self.u64(proto), ack: false)
        guard try request(VhostUserRequest.setOwner) == 0, try setMemTable(ram) == 0 else { throw VhostUserError.closed }
        return features
    }
}

/// A virtio-blk request in guest memory: header, data buffers and status byte.
struct BlkRequest {
    let header: UInt64
    let data: [(addr: UInt64, len: UInt32)]
    let status: UInt64
    let dataWritable: Bool

    init(ram: GuestRAM, type: UInt32, sector: UInt64, dataLengths: [Int], deviceWrites: Bool) {
        header = ram.alloc(16)
        var w = PayloadWriter()
        w.u32(type); w.u32(0); w.u64(sector)
        ram.write(w.bytes, at: header)
        data = dataLengths.map { (ram.alloc($0, align: 512), UInt32($0)) }
        status = ram.alloc(1, align: 1)
        ram.write([0xff], at: status)
        dataWritable = deviceWrites
    }

    var chain: [(addr: UInt64, len: UInt32, writable: Bool)] {
        [(header, 16, false)] + data.map { ($0.addr, $0.len, dataWritable) } + [(status, 1, true)]
    }

    func statusByte(_ ram: GuestRAM) -> UInt8 { ram.read(status, 1)[0] }

    func dataBytes(_ ram: GuestRAM) -> [UInt8] { data.flatMap { ram.read($0.addr, Int($0.len)) } }

    func fill(_ ram: GuestRAM, _ bytes: [UInt8]) {
        var at = 0
        for d in data {
            ram.write(Array(bytes[at..<at + Int(d.len)]), at: d.addr)
            at += Int(d.len)
        }
    }
}

/// A server on a fresh socket over `file`, with its log collected.
final class ServerFixture: @unchecked Sendable {
    let dir: String
    let path: String
    let server: VhostUserBlkServer
    final class Lines: Sendable { let lines = Mutex<[String]>([]) }
    let log = Lines()

    init(file: any BlockFile, readOnly: Bool = false, queues: Int = 2, serial: String = "obd-test-serial") throws {
        var template = Array("/tmp/obd-vu.XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&template)!)
        path = dir + "/blk.sock"
        let log = self.log
        server = try VhostUserBlkServer(file: file, socketPath: path, readOnly: readOnly, queues: queues, serial: serial) { line in
            log.lines.withLock { $0.append(line) }
        }
        try server.start()
    }

    deinit {
        server.stop()
        rmdir(dir)
    }

    func logged(_ text: String) -> Bool { log.lines.withLock { $0.contains { $0.contains(text) } } }

    /// Waits until a log line contains `text`.
    func waitLogged(_ text: String, timeout: Double = 5) -> Bool {
        let deadline = now() + timeout
        while !logged(text) {
            if now() > deadline { return false }
            usleep(1000)
        }
        return true
    }
}

/// Seeded pseudo-random bytes.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    return (0..<count).map { _ in
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
}
