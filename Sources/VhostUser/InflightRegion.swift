import CEventFD
import Glibc
import Synchronization

/// The shared memory in which the back-end records which requests it has taken from each
/// queue and not yet completed (INFLIGHT_SHMEM). The front-end keeps the descriptor
/// across back-end restarts and hands it back, so a restarted back-end completes what
/// its predecessor had in flight.
///
/// Per queue, at `index * queueBytes`: features u64, version u16, desc_num u16,
/// last_batch_head u16, used_idx u16, then desc_num entries of 16 bytes
/// (inflight u8, 5 padding bytes, next u16, counter u64).
public final class InflightRegion: @unchecked Sendable {
    public let queues: Int
    public let queueSize: Int
    let base: UnsafeMutableRawPointer
    let length: Int

    /// Bytes of one queue's area (64-byte aligned).
    public static func queueBytes(_ queueSize: Int) -> Int { (16 + 16 * queueSize + 63) & ~63 }

    private init(queues: Int, queueSize: Int, base: UnsafeMutableRawPointer, length: Int) {
        self.queues = queues
        self.queueSize = queueSize
        self.base = base
        self.length = length
    }

    deinit { munmap(base, length) }

    static func check(queues: Int, queueSize: Int, request: UInt32) throws(VhostUserError) {
        guard (1...VhostUserLimits.maxQueues).contains(queues),
              (1...VhostUserLimits.maxQueueSize).contains(queueSize) else {
            throw .refused(request: request, reason: "inflight area for \(queues) queues of \(queueSize) entries")
        }
    }

    /// A new, zeroed area in a memfd: the mapping and the descriptor to send (the caller closes it).
    static func create(queues: Int, queueSize: Int) throws(VhostUserError) -> (InflightRegion, Int32) {
        try check(queues: queues, queueSize: queueSize, request: VhostUserRequest.getInflightFD)
        let length = queues * queueBytes(queueSize)
        let fd = obd_memfd_create("obd-vhost-inflight", obd_mfd_cloexec())
        guard fd >= 0 else { throw .system(operation: "memfd_create", errno: errno) }
        guard ftruncate(fd, off_t(length)) == 0 else { let e = errno; close(fd); throw .system(operation: "ftruncate", errno: e) }
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let e = errno
            close(fd)
            throw .system(operation: "mmap", errno: e)
        }
        let region = InflightRegion(queues: queues, queueSize: queueSize, base: p, length: length)
        for q in 0..<queues {
            let at = q * queueBytes(queueSize)
            p.storeBytes(of: UInt16(1).littleEndian, toByteOffset: at + 8, as: UInt16.self)
            p.storeBytes(of: UInt16(queueSize).littleEndian, toByteOffset: at + 10, as: UInt16.self)
        }
        return (region, fd)
    }

    /// Maps an area the front-end hands back (SET_INFLIGHT_FD); closes `fd`.
    static func map(fd: Int32, size: UInt64, offset: UInt64, queues: Int, queueSize: Int) throws(VhostUserError) -> InflightRegion {
        defer { close(fd) }
        let r = VhostUserRequest.setInflightFD
        try check(queues: queues, queueSize: queueSize, request: r)
        let length = queues * queueBytes(queueSize)
        guard size == UInt64(length) else { throw .refused(request: r, reason: "inflight area of \(size) bytes, expected \(length)") }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        var st = stat()
        guard offset % page == 0, fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
              offset <= UInt64(Int.max) - size, UInt64(st.st_size) >= offset + size else {
            throw .refused(request: r, reason: "the inflight file does not hold [\(offset), +\(size))")
        }
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offset)), p != MAP_FAILED else {
            throw .system(operation: "mmap", errno: errno)
        }
        return InflightRegion(queues: queues, queueSize: queueSize, base: p, length: length)
    }

    /// The tracker of queue `index` for a ring of `ringSize` entries, if the area covers it.
    func tracker(queue index: Int, ringSize: Int) -> InflightTracker? {
        guard index < queues, ringSize <= queueSize else { return nil }
        return InflightTracker(region: self, base: base + index * Self.queueBytes(queueSize), entries: queueSize)
    }
}

/// One queue's in-flight bookkeeping, used only by that queue's thread.
struct InflightTracker: @unchecked Sendable {
    let region: InflightRegion
    let base: UnsafeMutableRawPointer
    let entries: Int

    private func entry(_ head: UInt16) -> UnsafeMutableRawPointer { base + 16 + 16 * Int(head) }

    var usedIndex: UInt16 {
        get { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 14, as: UInt16.self)) }
        nonmutating set { base.storeBytes(of: newValue.littleEndian, toByteOffset: 14, as: UInt16.self) }
    }

    var lastBatchHead: UInt16 {
        get { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 12, as: UInt16.self)) }
        nonmutating set { base.storeBytes(of: newValue.littleEndian, toByteOffset: 12, as: UInt16.self) }
    }

    func isInflight(_ head: UInt16) -> Bool { entry(head).load(as: UInt8.self) != 0 }

    func counter(_ head: UInt16) -> UInt64 { UInt64(littleEndian: entry(head).loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }

    /// Records that `head` was taken from the available ring (the `counter`-th taken).
    func begin(_ head: UInt16, counter: UInt64) {
        entry(head).storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
        entry(head).storeBytes(of: UInt8(1), as: UInt8.self)
        atomicMemoryFence(ordering: .releasing)
    }

    /// Before the used index is published: which head this batch completes.
    func completing(_ head: UInt16) {
        lastBatchHead = head
        atomicMemoryFence(ordering: .releasing)
    }

    /// After the used index `used` was published for `head`.
    func completed(_ head: UInt16, used: UInt16) {
        entry(head).storeBytes(of: UInt8(0), as: UInt8.self)
        atomicMemoryFence(ordering: .releasing)
        usedIndex = used
    }

    /// What a predecessor left: settles a completion it published but did not clear, and
    /// returns the heads still in flight, oldest first, with the next counter value.
    func recover(ringUsed: UInt16) -> (heads: [UInt16], nextCounter: UInt64) {
        if usedIndex != ringUsed {
            let h = lastBatchHead
            if Int(h) < entries { entry(h).storeBytes(of: UInt8(0), as: UInt8.self) }
            usedIndex = ringUsed
        }
        var found: [(UInt64, UInt16)] = []
        var top: UInt64 = 0
        for h in 0..<entries {
            let head = UInt16(h)
            top = max(top, counter(head))
            if isInflight(head) { found.append((counter(head), head)) }
        }
        return (found.sorted { $0.0 < $1.0 }.map(\.1), top &+ 1)
    }
}
