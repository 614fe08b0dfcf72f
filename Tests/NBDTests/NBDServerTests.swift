import BlockIO
import Glibc
import LSMT
import NBD
import TestSupport
import Testing
import Threading

/// A server on a unix socket in a temporary folder, serving on a background thread.
final class RunningServer {
    let dir = TemporaryDirectory("obd-nbd")
    let server: NBDServer
    var socket: String { dir.file("nbd.sock") }

    init(_ export: NBDExport) throws {
        server = NBDServer(export: export, workers: 4) { _ in }
        try server.listen(unixPath: dir.file("nbd.sock"))
        try NamedThread.detach(name: "nbd-test-accept") { [server] in server.serve() }
    }

    deinit {
        server.stop()
        dir.remove()
    }

    func client() throws -> NBDClient { try NBDClient(socketPath: socket) }
}

/// A writable two-layer stack (a committed lower with data, an empty append-only upper).
func writableStack(in dir: TemporaryDirectory, size: UInt64 = 8 << 20) throws -> (LayerStack, [UInt8]) {
    var g = SplitMix64(seed: 17)
    let content = g.bytes(Int(size))
    let base = try WritableLayer.create(dataPath: dir.file("bd"), indexPath: dir.file("bi"), virtualSize: size)
    try content.withUnsafeBytes { try base.write($0, at: 0) }
    let out = try LocalFile(path: dir.file("lower"), mode: .createExclusive)
    try LayerCommit.write(segments: base.segments, sources: [base.dataFile], virtualSize: size, defaultParent: .null,
                          args: CommitArgs(), into: FileAppendSink(file: out))
    let lower = try ReadOnlyLayer(file: LocalFile(path: dir.file("lower")))
    let upper = try WritableLayer.create(dataPath: dir.file("ud"), indexPath: dir.file("ui"), virtualSize: size)
    return (try LayerStack(lowers: [lower], upper: upper), content)
}

@Suite("NBD server", .serialized)
struct NBDServerTests {
    @Test("GO negotiation, reads, many requests in flight on several connections")
    func readsInFlight() throws {
        var g = SplitMix64(seed: 1)
        let data = g.bytes(4 << 20)
        let s = try RunningServer(NBDExport(file: MemoryFile(bytes: data, writable: false)))
        let clients = try (0..<3).map { _ in try s.client() }
        for c in clients {
            try c.go()
            #expect(c.size == UInt64(data.count))
            #expect(c.flags & 2 != 0, "read-only flag")
        }
        for (ci, c) in clients.enumerated() {
            var expected: [UInt64: (UInt64, UInt32)] = [:]
            for h in 0..<48 {
                let off = g.next() % UInt64(data.count - 70_000)
                let len = UInt32(g.next() % 65_536 + 1)
                expected[UInt64(h)] = (off, len)
                c.request(0, handle: UInt64(h), offset: off, length: len)
            }
            for _ in 0..<48 {
                let (e, h) = try c.reply()
                #expect(e == 0)
                let entry = expected.removeValue(forKey: h)
                let (off, len) = try #require(entry, "connection \(ci): unknown handle \(h)")
                let got = try c.recvExactly(Int(len))
                #expect(got[...] == data[Int(off)..<(Int(off) + Int(len))])
            }
        }
    }

    @Test("writes, FUA, flush, trim and write-zeroes land in the upper; reads see them")
    func writes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (stack, content) = try writableStack(in: dir)
        var model = content
        let s = try RunningServer(NBDExport(file: stack))
        let c = try s.client()
        try c.go()
        #expect(c.flags & 2 == 0 && c.flags & (1 << 5) != 0 && c.flags & (1 << 6) != 0)
        var g = SplitMix64(seed: 2)
        for i in 0..<40 {
            let off = (g.next() % 16000) * 512
            let len = Int(g.next() % 64 + 1) * 512
            switch i % 4 {
            case 0, 1:
                let b = g.bytes(len)
                #expect(try c.write(off, b, flags: i % 8 == 0 ? 1 : 0) == 0)
                model.replaceSubrange(Int(off)..<(Int(off) + len), with: b)
            case 2:
                #expect(try c.simple(6, off, UInt32(len)) == 0)
                model.replaceSubrange(Int(off)..<(Int(off) + len), with: [UInt8](repeating: 0, count: len))
            default:
                #expect(try c.simple(4, off, UInt32(len)) == 0)
                model.replaceSubrange(Int(off)..<(Int(off) + len), with: [UInt8](repeating: 0, count: len))
            }
        }
        #expect(try c.simple(3) == 0)
        let (e, all) = try c.read(0, UInt32(model.count), handle: 77)
        #expect(e == 0 && all == model)
        // The upper holds the writes after a reopen.
        let reopened = try LayerStack(lowers: stack.lowers, upper: WritableLayer.open(dataPath: dir.file("ud"), indexPath: dir.file("ui")))
        #expect(try reopened.readBytes(at: 0, count: model.count) == model)
    }

    @Test("bad requests get proper errors and change nothing")
    func badRequests() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (stack, content) = try writableStack(in: dir)
        let s = try RunningServer(NBDExport(file: stack))
        let c = try s.client()
        try c.go()
        let size = c.size
        #expect(try c.read(size - 512, 1024).0 == 22, "read past the end: EINVAL")
        #expect(try c.read(UInt64.max - 10, 100).0 == 22)
        #expect(try c.write(size, [UInt8](repeating: 1, count: 512)) == 28, "write past the end: ENOSPC")
        #expect(try c.write(100, [UInt8](repeating: 1, count: 512)) == 22, "unaligned write: EINVAL")
        #expect(try c.simple(6, 1, 100) == 22, "unaligned write-zeroes: EINVAL")
        #expect(try c.simple(4, size - 512, 4096) == 28, "trim past the end: ENOSPC")
        #expect(try c.simple(99) == 22, "unknown command: EINVAL")
        #expect(try c.read(0, 64 << 20).0 == 75, "oversized read: EOVERFLOW")
        #expect(try c.read(0, 4096).1[...] == content[0..<4096], "connection still works")
        #expect(stack.upper!.segments.isEmpty, "nothing reached the upper")
        // A bad magic closes the connection; the server keeps serving others.
        c.request(0, handle: 9, offset: 0, length: 512, magic: 0xDEAD_BEEF)
        #expect(c.isClosed())
        let d = try s.client()
        try d.go()
        #expect(try d.read(0, 512).0 == 0)
        // Oversized write: refused, then the connection closes (its payload cannot be skipped).
        d.request(1, handle: 5, offset: 0, length: 64 << 20)
        #expect(try d.reply().0 == 75)
        #expect(d.isClosed())
        #expect(stack.upper!.segments.isEmpty)
    }

    @Test("read-only export refuses writes with EPERM")
    func readOnly() throws {
        let s = try RunningServer(NBDExport(file: MemoryFile(bytes: [UInt8](repeating: 7, count: 1 << 20), writable: false)))
        let c = try s.client()
        try c.go()
        #expect(try c.write(0, [UInt8](repeating: 1, count: 512)) == 1)
        #expect(try c.simple(4, 0, 512) == 1)
        #expect(try c.simple(6, 0, 512) == 1)
        #expect(try c.simple(3) == 0, "flush is always allowed")
    }

    @Test("negotiation: LIST, INFO, unknown options, ABORT, EXPORT_NAME, malformed options")
    func negotiation() throws {
        let s = try RunningServer(NBDExport(name: "disk", file: MemoryFile(bytes: [UInt8](repeating: 7, count: 1 << 20))))
        let a = try s.client()
        try a.hello()
        a.option(3, [])
        var r = try a.optionReply()
        #expect(r.1 == 2 && r.2 == NBDClient.be(UInt32(4)) + Array("disk".utf8))
        #expect(try a.optionReply().1 == 1)
        a.option(6, NBDClient.be(UInt32(4)) + Array("disk".utf8) + NBDClient.be(UInt16(0)))
        r = try a.optionReply()
        #expect(r.1 == 3 && NBDClient.read(r.2, 2, UInt64.self) == 1 << 20)
        #expect(try a.optionReply().1 == 1)
        a.option(6, NBDClient.be(UInt32(5)) + Array("other".utf8) + NBDClient.be(UInt16(0)))
        #expect(try a.optionReply().1 == 0x8000_0006, "unknown export")
        a.option(6, NBDClient.be(UInt32(500)) + [1, 2])
        #expect(try a.optionReply().1 == 0x8000_0003, "malformed INFO")
        a.option(8, [])
        #expect(try a.optionReply().1 == 0x8000_0001, "structured replies unsupported")
        a.option(12345, [1, 2, 3])
        #expect(try a.optionReply().1 == 0x8000_0001)
        a.option(2, [])
        #expect(try a.optionReply().1 == 1)
        #expect(a.isClosed())

        let b = try s.client()
        try b.hello(clientFlags: 1)
        b.option(1, Array("disk".utf8))
        let reply = try b.recvExactly(10 + 124)
        #expect(NBDClient.read(reply, 0, UInt64.self) == 1 << 20)
        #expect(try b.read(0, 16).1 == [UInt8](repeating: 7, count: 16))

        let c = try s.client()
        try c.hello()
        c.option(1, Array("nope".utf8))
        #expect(c.isClosed(), "unknown export name closes")

        let d = try s.client()
        try d.hello()
        d.option(7, [UInt8](repeating: 0, count: 10))
        d.send(NBDClient.be(UInt64(0x4948_4156_454F_5054)) + NBDClient.be(UInt32(7)) + NBDClient.be(UInt32(1 << 30)))
        _ = try? d.optionReply()
        #expect(d.isClosed(), "an oversized option closes")

        let e = try s.client()
        try e.hello(clientFlags: 0x80)
        #expect(e.isClosed(), "unknown client flags close")
    }

    @Test("garbage and truncated requests never crash the server or touch the upper")
    func garbage() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (stack, content) = try writableStack(in: dir)
        let s = try RunningServer(NBDExport(file: stack))
        var g = SplitMix64(seed: 3)
        for i in 0..<60 {
            let c = try s.client()
            if i % 2 == 0 { try c.go() } else { try c.hello() }
            c.send(g.bytes(Int(g.next() % 200)))
            _ = c  // closed when released
        }
        // A request cut short, then the client goes away.
        let t = try s.client()
        try t.go()
        t.send(Array(NBDClient.be(UInt32(0x2560_9513)) + [0, 0, 0, 1]))
        let ok = try s.client()
        try ok.go()
        #expect(try ok.read(0, 1 << 20).1[...] == content[0..<(1 << 20)])
        #expect(stack.upper!.segments.isEmpty)
    }
}
