import BlockIO
import LSMT
import Testing
import TestSupport
import Threading

/// A file whose reads block, once armed, until the test opens the gate (a lower that
/// waits on a slow registry).
final class GatedFile: BlockFile, Sendable {
    let inner: any BlockFile
    /// (armed, readers blocked, open)
    let gate = ConditionLock((armed: false, blocked: 0, open: false))
    init(_ inner: any BlockFile) { self.inner = inner }
    var size: UInt64 { inner.size }
    var name: String { "gated" }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let armed = gate.withLock { g -> Bool in
            if g.armed { g.blocked += 1 }
            return g.armed
        }
        if armed {
            gate.notifyAll()
            gate.withLock(when: { $0.open }) { _ in }
        }
        return try inner.read(into: buffer, at: offset)
    }
}

@Suite("Upper layer under slow lowers")
struct UpperConcurrencyTests {
    /// A read that waits on a lower must not hold up writes to the upper.
    @Test func writesDoNotWaitForAReadBlockedInALower() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let base = try WritableLayer.create(dataPath: dir.file("b.data"), indexPath: dir.file("b.index"), virtualSize: 1 << 20)
        try [UInt8](repeating: 7, count: 1 << 20).withUnsafeBytes { try base.write($0, at: 0) }
        let gated = GatedFile(try commitToMemory(base))
        let lower = try ReadOnlyLayer(file: gated)
        let upper = try WritableLayer.create(dataPath: dir.file("u.data"), indexPath: dir.file("u.index"), virtualSize: 1 << 20)
        let stack = try LayerStack(lowers: [lower], upper: upper)
        gated.gate.withLock { $0.armed = true }

        let reader = try NamedThread.spawn(name: "slow-reader") {
            _ = try? stack.readBytes(at: 0, count: 4096)
        }
        // The reader is inside the lower.
        let entered = gated.gate.withLock(when: { $0.blocked > 0 }, deadline: monotonicSeconds() + 60) { _ in true }
        #expect(entered == true)

        let written = ConditionLock(false)
        let writer = try NamedThread.spawn(name: "writer") {
            let data = [UInt8](repeating: 9, count: 4096)
            try? data.withUnsafeBytes { try stack.write($0, at: 8192) }
            written.withLock { $0 = true }
            written.notifyAll()
        }
        // Generous bound: the write is local and must not wait for the gate at all.
        let done = written.withLock(when: { $0 }, deadline: monotonicSeconds() + 20) { _ in true }
        gated.gate.withLock { $0.open = true }
        gated.gate.notifyAll()
        reader.join()
        writer.join()
        #expect(done == true, "a write to the upper waited for a read blocked in a lower")
        #expect(try stack.readBytes(at: 8192, count: 4096) == [UInt8](repeating: 9, count: 4096))
        #expect(try stack.readBytes(at: 0, count: 4096) == [UInt8](repeating: 7, count: 4096))
    }
}
