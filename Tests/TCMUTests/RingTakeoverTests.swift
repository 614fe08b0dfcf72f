import BlockIO
import Glibc
import Synchronization
import TCMU
import Testing
import TestSupport

/// The kernel's side of `action/block_dev` and `action/reset_ring` over a FakeKernelRing,
/// as target_core_user does it: the kernel knows which commands it has put in the ring
/// and which answers it has read back (from its last cleaned offset up to `cmd_tail`);
/// blocking first collects posted answers; a reset answers every command still in
/// flight with BUSY or CHECK CONDITION and sets head and tail to 0.
final class FakeRingControl: RingControl, @unchecked Sendable {
    let kernel: FakeKernelRing
    private let state = Mutex(State())

    struct State {
        var inFlight: Set<UInt16> = []
        var lastCleaned = 0
        var blocked = false
        var calls: [String] = []
        var answered: [UInt16: String] = [:]   // by the reset: "BUSY" or "CHECK"
        var brokenRing = false
    }

    init(kernel: FakeKernelRing) { self.kernel = kernel }

    /// The fake kernel queues a command (recording it as in flight).
    func submit(id: UInt16, cdb: [UInt8], buffers: [Int], fill: [UInt8] = []) {
        let blocked = state.withLock { s in
            s.inFlight.insert(id)
            return s.blocked
        }
        precondition(!blocked, "a blocked device takes no command into its ring")
        kernel.submit(id: id, cdb: cdb, buffers: buffers, fill: fill)
    }

    /// What the kernel does on a doorbell (and on block): reads answers up to cmd_tail.
    func collectCompletions() {
        let rsp = kernel.responses(from: state.withLock { $0.lastCleaned })
        state.withLock { s in
            for (id, _, _, _) in rsp where s.inFlight.remove(id) == nil { s.brokenRing = true }
            s.lastCleaned = kernel.tail
        }
    }

    func block() throws {
        collectCompletions()
        state.withLock { $0.blocked = true; $0.calls.append("block") }
    }

    func resetRing(_ level: RingResetLevel) throws {
        state.withLock { s in
            s.calls.append("reset\(level.rawValue)")
            for id in s.inFlight { s.answered[id] = level == .retry ? "BUSY" : "CHECK" }
            s.inFlight.removeAll()
            s.lastCleaned = 0
        }
        kernel.head = 0
        kernel.base.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        kernel.base.storeBytes(of: UInt32(0), toByteOffset: 64, as: UInt32.self)
    }

    func unblock() throws { state.withLock { $0.blocked = false; $0.calls.append("unblock") } }

    var snapshot: State { state.withLock { $0 } }
}

/// A control whose configfs attributes are missing (no configfs in this namespace).
struct MissingRingControl: RingControl {
    func block() throws { throw TCMUError.kernelControl(path: "/sys/kernel/config/target/core/user_1/dev/action/block_dev", detail: "No such file or directory") }
    func resetRing(_ level: RingResetLevel) throws { try block() }
    func unblock() throws { try block() }
}

@Suite("TCMU ring takeover after a crash")
struct RingTakeoverTests {
    static func write10(lba: UInt32, sectors: UInt16) -> [UInt8] {
        [0x2A, 0] + withUnsafeBytes(of: lba.bigEndian, Array.init) + [0] + withUnsafeBytes(of: sectors.bigEndian, Array.init) + [0]
    }

    static func read10(lba: UInt32, sectors: UInt16) -> [UInt8] {
        [0x28, 0] + withUnsafeBytes(of: lba.bigEndian, Array.init) + [0] + withUnsafeBytes(of: sectors.bigEndian, Array.init) + [0]
    }

    @Test("commands a dead process left in the ring (taken, answered out of order, or never seen) go back to the kernel as BUSY and are not run again")
    func deadProcessLeftovers() throws {
        let k = FakeKernelRing()
        let kernel = FakeRingControl(kernel: k)
        let original = [UInt8](repeating: 0x11, count: 1 << 20)
        let file = MemoryFile(bytes: original)
        let disk = SCSIDisk(file: file, readOnly: false, serial: "t")
        // 12 writes, each of 4 KiB of its own byte, to sectors 8·id.
        for id in UInt16(1)...12 {
            kernel.submit(id: id, cdb: Self.write10(lba: UInt32(id) * 8, sectors: 8), buffers: [4096],
                          fill: [UInt8](repeating: UInt8(0x40 + id), count: 4096))
        }
        // The old process takes all 12, runs three of them and answers them out of order
        // (each answer lands in the oldest slot), rings the doorbell, then dies.
        do {
            let old = try CommandRing(base: k.base, size: FakeKernelRing.size)
            let taken = old.fetch()
            #expect(taken.count == 12)
            for id: UInt16 in [7, 2, 9] {
                let c = try #require(taken.first { $0.id == id })
                #expect(disk.execute(cdb: c.cdb, data: c.data) == .good)
                old.complete(id: c.id, status: .good)
            }
        }
        kernel.collectCompletions()
        // While nobody serves the device, two more commands arrive.
        for id in UInt16(13)...14 {
            kernel.submit(id: id, cdb: Self.write10(lba: UInt32(id) * 8, sectors: 8), buffers: [4096],
                          fill: [UInt8](repeating: UInt8(0x40 + id), count: 4096))
        }
        let written = try file.readBytes(at: 0, count: 1 << 20)

        // The new process maps the same ring and takes it over.
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        #expect(ring.unansweredCommands == 11)   // 9 slots of the old 12, and 2 new ones
        var started = false
        let outcome = try RingTakeover.takeOver(ring: ring, control: kernel) {
            #expect(kernel.snapshot.calls == ["block", "reset1"])
            started = true
        }
        #expect(started)
        #expect(outcome == RingTakeover.Outcome(abandoned: 11, reset: true))
        let s = kernel.snapshot
        #expect(s.calls == ["block", "reset1", "unblock"])
        #expect(!s.brokenRing)
        #expect(s.inFlight.isEmpty)
        // Every command the old process had not answered, and only those, got BUSY.
        #expect(Set(s.answered.keys) == Set(UInt16(1)...14).subtracting([7, 2, 9]))
        #expect(s.answered.values.allSatisfy { $0 == "BUSY" })
        // Nothing left in the ring was run again: the disk holds what it held.
        #expect(try file.readBytes(at: 0, count: 1 << 20) == written)
        #expect(ring.fetch().isEmpty)

        // The initiator sends the BUSY ones again; the new ring serves them from offset 0.
        for id in s.answered.keys.sorted() {
            kernel.submit(id: id, cdb: Self.write10(lba: UInt32(id) * 8, sectors: 8), buffers: [4096],
                          fill: [UInt8](repeating: UInt8(0x40 + id), count: 4096))
        }
        let retried = ring.fetch()
        #expect(retried.count == 11)
        for c in retried.reversed() { ring.complete(id: c.id, status: disk.execute(cdb: c.cdb, data: c.data)) }
        kernel.collectCompletions()
        #expect(!kernel.snapshot.brokenRing)
        #expect(kernel.snapshot.inFlight.isEmpty)
        #expect(k.responses(from: 0).allSatisfy { $0.1 == 0 })
        for id in UInt16(1)...14 {
            let got = try file.readBytes(at: UInt64(id) * 8 * 512, count: 4096)
            #expect(got == [UInt8](repeating: UInt8(0x40 + id), count: 4096), "write \(id)")
        }
    }

    @Test("running the leftovers again, as a naive re-attach does, breaks the ring: the kernel no longer knows some of the ids")
    func replayIsUnsafe() throws {
        let k = FakeKernelRing()
        let kernel = FakeRingControl(kernel: k)
        for id in UInt16(1)...4 { kernel.submit(id: id, cdb: [0, 0, 0, 0, 0, 0], buffers: []) }
        let old = try CommandRing(base: k.base, size: FakeKernelRing.size)
        _ = old.fetch()
        old.complete(id: 4, status: .good)    // answered first, into slot 1
        kernel.collectCompletions()
        // A new ring that simply fetches from cmd_tail sees slot 4 (id 4) again.
        let naive = try CommandRing(base: k.base, size: FakeKernelRing.size)
        let again = naive.fetch()
        #expect(again.map(\.id).contains(4))
        for c in again { naive.complete(id: c.id, status: .good) }
        kernel.collectCompletions()
        #expect(kernel.snapshot.brokenRing)
    }

    @Test("without a ring control, an empty ring is taken as it is and a ring with leftovers is refused")
    func noControl() throws {
        let k = FakeKernelRing()
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        var started = 0
        let empty = try RingTakeover.takeOver(ring: ring, control: MissingRingControl()) { started += 1 }
        #expect(empty == RingTakeover.Outcome(abandoned: 0, reset: false))
        #expect(started == 1)

        k.submit(id: 1, cdb: [0, 0, 0, 0, 0, 0], buffers: [])
        k.submit(id: 2, cdb: [0, 0, 0, 0, 0, 0], buffers: [])
        let ring2 = try CommandRing(base: k.base, size: FakeKernelRing.size)
        #expect {
            try RingTakeover.takeOver(ring: ring2, control: MissingRingControl()) { started += 1 }
        } throws: { error in
            guard case let .takeover(detail)? = error as? TCMUError else { return false }
            return detail.hasPrefix("2 command(s)") && detail.contains("block_dev")
        }
        #expect {
            try RingTakeover.takeOver(ring: ring2, control: nil) { started += 1 }
        } throws: { error in
            guard case .takeover? = error as? TCMUError else { return false }
            return true
        }
        #expect(started == 1)
    }

    @Test("a failing start unblocks the device; an image that no longer opens gets its leftovers failed")
    func failures() throws {
        let k = FakeKernelRing()
        let kernel = FakeRingControl(kernel: k)
        kernel.submit(id: 5, cdb: Self.read10(lba: 0, sectors: 1), buffers: [512])
        let ring = try CommandRing(base: k.base, size: FakeKernelRing.size)
        #expect {
            try RingTakeover.takeOver(ring: ring, control: kernel) { throw TCMUError.device("d", "thread") }
        } throws: { error in
            guard case let .device(name, detail)? = error as? TCMUError else { return false }
            return name == "d" && detail == "thread"
        }
        #expect(kernel.snapshot.calls == ["block", "reset1", "unblock"])
        #expect(kernel.snapshot.answered == [5: "BUSY"])

        let k2 = FakeKernelRing()
        let kernel2 = FakeRingControl(kernel: k2)
        kernel2.submit(id: 9, cdb: Self.read10(lba: 0, sectors: 1), buffers: [512])
        try RingTakeover.failLeftovers(control: kernel2)
        #expect(kernel2.snapshot.calls == ["block", "reset2", "unblock"])
        #expect(kernel2.snapshot.answered == [9: "CHECK"])
    }

    @Test("the configfs control writes the attributes of user_<hba>/<name>/action")
    func configfsPaths() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let action = "\(dir.path)/user_999999999/dev_3/action"
        for d in ["user_999999999", "user_999999999/dev_3", "user_999999999/dev_3/action"] {
            #expect(mkdir("\(dir.path)/\(d)", 0o755) == 0)
        }
        for f in ["block_dev", "reset_ring"] { _ = try LocalFile(path: "\(action)/\(f)", mode: .createTruncate) }
        let c = ConfigfsRingControl(hba: "999999999", name: "dev_3", root: dir.path)
        #expect(c.directory == "\(dir.path)/user_999999999/dev_3")
        try c.block()
        #expect(try String(decoding: LocalFile(path: "\(action)/block_dev").readBytes(at: 0, count: 1), as: UTF8.self) == "1")
        try c.resetRing(.retry)
        #expect(try String(decoding: LocalFile(path: "\(action)/reset_ring").readBytes(at: 0, count: 1), as: UTF8.self) == "1")
        try c.unblock()
        #expect(try String(decoding: LocalFile(path: "\(action)/block_dev").readBytes(at: 0, count: 1), as: UTF8.self) == "0")
        let missing = ConfigfsRingControl(hba: "1", name: "nope", root: dir.path)
        #expect {
            try missing.block()
        } throws: { error in
            guard case let .kernelControl(path, _)? = error as? TCMUError else { return false }
            return path.hasSuffix("user_1/nope/action/block_dev")
        }
    }
}
