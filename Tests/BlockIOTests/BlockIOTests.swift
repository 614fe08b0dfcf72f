import BlockIO
import Dispatch
import Glibc
import TestSupport
import Synchronization
import Testing
import Threading

@Suite("BlockIO files")
struct BlockIOTests {
    @Test("local file: write, read back, short read at the end, size")
    func localFile() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let f = try LocalFile(path: dir.file("a"), mode: .createExclusive)
        let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try f.writeBytes(data, at: 100)
        #expect(f.size == 10_100)
        #expect(try f.readBytes(at: 100, count: 10_000) == data)
        var buf = [UInt8](repeating: 1, count: 500)
        let n = try buf.withUnsafeMutableBytes { try f.read(into: $0, at: 9_900) }
        #expect(n == 200)
        #expect(try buf.withUnsafeMutableBytes { try f.read(into: $0, at: 20_000) } == 0)
        #expect(throws: BlockIOError.self) { try f.readBytes(at: 10_000, count: 200) }
        #expect(try f.readBytes(at: 0, count: 100) == [UInt8](repeating: 0, count: 100))
    }

    @Test("local file: exclusive create refuses an existing file; read-only refuses writes")
    func modes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = try LocalFile(path: dir.file("a"), mode: .createExclusive)
        #expect(throws: BlockIOError.open(path: dir.file("a"), errno: EEXIST)) {
            try LocalFile(path: dir.file("a"), mode: .createExclusive)
        }
        let ro = try LocalFile(path: dir.file("a"))
        #expect(throws: BlockIOError.readOnly(name: dir.file("a"))) { try ro.writeBytes([1], at: 0) }
        #expect(throws: BlockIOError.self) { try LocalFile(path: dir.file("missing")) }
        #expect(throws: BlockIOError.self) { try LocalFile(path: dir.path) }
    }

    @Test("local file: discard punches a hole that reads as zeros; data runs see it")
    func discard() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let f = try LocalFile(path: dir.file("a"), mode: .createExclusive)
        try f.writeBytes([UInt8](repeating: 9, count: 1 << 20), at: 0)
        try f.discard(offset: 256 << 10, length: 256 << 10)
        #expect(try f.readBytes(at: 256 << 10, count: 256 << 10) == [UInt8](repeating: 0, count: 256 << 10))
        #expect(try f.readBytes(at: 0, count: 4) == [9, 9, 9, 9])
        let runs = try f.dataRuns(from: 0)
        #expect(runs.count == 2)
        #expect(runs.first == 0..<(256 << 10))
    }

    @Test("memory file and slices")
    func memoryAndSlice() throws {
        let m = MemoryFile()
        try m.writeBytes([1, 2, 3, 4, 5, 6], at: 2)
        #expect(m.bytes == [0, 0, 1, 2, 3, 4, 5, 6])
        try m.discard(offset: 3, length: 2)
        #expect(m.bytes == [0, 0, 1, 0, 0, 4, 5, 6])
        let s = try SliceFile(parent: m, base: 2, length: 4)
        #expect(s.size == 4)
        #expect(try s.readBytes(at: 0, count: 4) == [1, 0, 0, 4])
        var buf = [UInt8](repeating: 0, count: 10)
        #expect(try buf.withUnsafeMutableBytes { try s.read(into: $0, at: 1) } == 3)
        #expect(throws: BlockIOError.self) { try SliceFile(parent: m, base: 6, length: 3) }
        #expect(throws: BlockIOError.self) { try SliceFile(parent: m, base: UInt64.max, length: 3) }
    }

    @Test("append sink: buffered appends land in order")
    func appendSink() throws {
        let m = MemoryFile()
        let sink = FileAppendSink(file: m, start: 10, bufferSize: 4096)
        var expected = [UInt8](repeating: 0, count: 10)
        var g = SplitMix64(seed: 1)
        for _ in 0..<200 {
            let b = g.bytes(Int(g.next() % 9000))
            try b.withUnsafeBytes { try sink.append($0) }
            expected += b
        }
        try sink.finish()
        #expect(sink.position == UInt64(expected.count - 10))
        #expect(m.bytes == expected)
    }

    @Test("concurrent reads of one local file return the right bytes")
    func concurrentReads() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var g = SplitMix64(seed: 2)
        let data = g.bytes(4 << 20)
        let w = try LocalFile(path: dir.file("a"), mode: .createExclusive)
        try w.writeBytes(data, at: 0)
        let f = try LocalFile(path: dir.file("a"))
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            var g = SplitMix64(seed: UInt64(t))
            for _ in 0..<500 {
                let off = Int(g.next() % UInt64(data.count - 8192))
                if (try? f.readBytes(at: UInt64(off), count: 8192)) != Array(data[off..<(off + 8192)]) { failures.add() }
            }
        }
        #expect(failures.value == 0)
    }

    @Test("thread-local values are per thread")
    func threadLocal() {
        let tl = ThreadLocal { ScratchBuffer(capacity: 100) }
        let a = ObjectIdentifier(tl.value)
        #expect(ObjectIdentifier(tl.value) == a)
        let b = tl.value.reserve(1 << 20)
        #expect(b.count >= 1 << 20)
    }
}

final class Counter: Sendable {
    private let n = Mutex(0)
    func add() { n.withLock { $0 += 1 } }
    var value: Int { n.withLock { $0 } }
}

@Suite("libaio engine")
struct AIOFileTests {
    @Test("O_DIRECT + libaio reads match pread at unaligned offsets and sizes, and stop at the end")
    func matchesPread() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var g = SplitMix64(seed: 4)
        let data = g.bytes(3 << 20 + 1234)
        let w = try LocalFile(path: dir.file("f"), mode: .createExclusive)
        try w.writeBytes(data, at: 0)
        try w.flush()
        let aio = try AIOFile(path: dir.file("f"))
        #expect(aio.size == UInt64(data.count))
        for i in 0..<120 {
            let off = Int(g.next() % UInt64(data.count))
            let len = Int(g.next() % UInt64(i % 4 == 0 ? 3 << 20 : 20_000)) + 1
            var buf = [UInt8](repeating: 0xEE, count: len)
            let n = try buf.withUnsafeMutableBytes { try aio.read(into: $0, at: UInt64(off)) }
            #expect(n == min(len, data.count - off))
            #expect(buf[0..<n] == data[off..<(off + n)])
        }
        var whole = [UInt8](repeating: 0, count: data.count)
        #expect(try whole.withUnsafeMutableBytes { try aio.read(into: $0, at: 0) } == data.count)
        #expect(whole == data)
    }
}
