import CEventFD
import Glibc
import Synchronization
import Threading

/// One virtqueue of a session: its configuration from the vring messages, and, while
/// it runs, the thread that serves it. The session thread changes the configuration
/// only while the thread is stopped; the call and err descriptors may change while it
/// runs, so they sit behind a lock.
final class VirtQueue: @unchecked Sendable {
    let index: Int
    var size = 0
    var addresses: VringAddresses?
    /// The next available-ring slot to take (SET/GET_VRING_BASE).
    var nextAvailable: UInt16 = 0
    /// The kick descriptor; -1 with `started` means "poll" (no descriptor was sent).
    var kickFD: Int32 = -1
    /// A SET_VRING_KICK arrived since the last stop.
    var started = false
    var enabled = false
    /// The last ring error: the queue stays stopped until its next start.
    var failure: VhostUserError?
    let callFD = Mutex<Int32>(-1)
    let errFD = Mutex<Int32>(-1)

    private var thread: JoinHandle?
    private var stopFD: Int32 = -1
    let result = Mutex<(next: UInt16, failure: VhostUserError?)>((0, nil))

    init(index: Int) { self.index = index }

    var isRunning: Bool { thread != nil }

    /// Whether the queue has all it needs and should be served.
    func ready(memory: GuestMemory?) -> Bool {
        started && enabled && size > 0 && addresses != nil && memory != nil && failure == nil
    }

    /// Starts the serving thread over `memory`; a ring outside the memory table is an error.
    func start(memory: GuestMemory, inflight: InflightTracker?, disk: VirtioBlkDisk, features: UInt64,
               log: @escaping @Sendable (String) -> Void) throws(VhostUserError) {
        guard thread == nil, let addresses else { return }
        let ring = try SplitRing.map(addresses, size: size, memory: memory, queue: index)
        let stop = obd_eventfd(0, obd_efd_cloexec())
        guard stop >= 0 else { throw .system(operation: "eventfd", errno: errno) }
        let server = QueueServer(queue: index, ring: ring, memory: memory, disk: disk, kickFD: kickFD, stopFD: stop,
                                 next: nextAvailable, eventIndex: features & VirtioFeature.ringEventIdx != 0,
                                 indirect: features & VirtioFeature.ringIndirectDesc != 0,
                                 inflight: inflight, owner: self, log: log)
        do {
            thread = try NamedThread.spawn(name: "obd-vhost-q\(index)") { server.run() }
        } catch let e as NamedThread.StartError {
            close(stop)
            throw .system(operation: "starting the thread of queue \(index)", errno: e.errno)
        } catch {
            close(stop)
            throw .system(operation: "starting the thread of queue \(index)", errno: EAGAIN)
        }
        stopFD = stop
    }

    /// Stops the serving thread (after the request in progress) and keeps where it got to.
    func stop() {
        guard let t = thread else { return }
        var one: UInt64 = 1
        _ = retryingInterrupted { write(stopFD, &one, 8) }
        t.join()
        thread = nil
        close(stopFD)
        stopFD = -1
        let r = result.withLock { $0 }
        nextAvailable = r.next
        if let f = r.failure { failure = f }
    }

    /// Installs a new call (or err) descriptor, closing the old one; safe while running.
    func replaceNotifier(call: Bool, fd: Int32) {
        if call {
            callFD.withLock { old in
                if old >= 0 { close(old) }
                old = fd
            }
        } else {
            errFD.withLock { old in
                if old >= 0 { close(old) }
                old = fd
            }
        }
    }

    /// Stops the queue and forgets its configuration (RESET_OWNER, disconnect).
    func reset() {
        stop()
        if kickFD >= 0 { close(kickFD) }
        kickFD = -1
        callFD.withLock { if $0 >= 0 { close($0) }; $0 = -1 }
        errFD.withLock { if $0 >= 0 { close($0) }; $0 = -1 }
        size = 0
        addresses = nil
        nextAvailable = 0
        started = false
        enabled = false
        failure = nil
    }
}

/// The loop of one queue's thread: wait for a kick, serve every available chain, put
/// it in the used ring, notify the driver when it asked for it.
struct QueueServer: @unchecked Sendable {
    let queue: Int
    let ring: SplitRing
    let memory: GuestMemory
    let disk: VirtioBlkDisk
    let kickFD: Int32
    let stopFD: Int32
    var next: UInt16
    let eventIndex: Bool
    let indirect: Bool
    let inflight: InflightTracker?
    var counter: UInt64 = 1
    /// Bounce buffer of this queue's thread (VirtioBlkDisk.handle), made in `run`.
    var scratch: UnsafeMutableRawBufferPointer?
    let owner: VirtQueue
    let log: @Sendable (String) -> Void

    func run() {
        var me = self
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioBlkDisk.bounceBytes, alignment: 4096)
        defer { scratch.deallocate() }
        me.scratch = scratch
        var failure: VhostUserError?
        var segments: [GuestSegment] = []
        segments.reserveCapacity(ring.size)
        var used = ring.usedIndex
        var fds = [pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0), pollfd(fd: kickFD, events: Int16(POLLIN), revents: 0)]
        let waitForever: Int32 = kickFD >= 0 ? -1 : 1
        ring.setUsedFlags(0)
        do {
            try me.resubmit(&used, &segments)
            // A kick may have been missed while the queue was stopped: look once at start.
            try me.drain(&used, &segments)
            while true {
                fds[0].revents = 0
                fds[1].revents = 0
                let n = retryingInterrupted { poll(&fds, kickFD >= 0 ? 2 : 1, waitForever) }
                if n < 0 { throw VhostUserError.system(operation: "poll", errno: errno) }
                if fds[0].revents != 0 { break }
                if fds[1].revents & Int16(POLLIN) != 0 {
                    var v: UInt64 = 0
                    _ = retryingInterrupted { read(kickFD, &v, 8) }
                } else if fds[1].revents != 0 {
                    throw VhostUserError.ring(queue: queue, reason: "the kick descriptor failed")
                }
                try me.drain(&used, &segments)
            }
        } catch let e as VhostUserError {
            failure = e
        } catch {
            failure = .ring(queue: queue, reason: "\(error)")
        }
        if let failure {
            log("\(failure); the queue stops until the front-end restarts it")
            owner.errFD.withLock { fd in
                var one: UInt64 = 1
                if fd >= 0 { _ = retryingInterrupted { write(fd, &one, 8) } }
            }
        }
        let final = me.next
        owner.result.withLock { $0 = (final, failure) }
    }

    /// Serves chains until the available ring is empty (re-checking after publishing
    /// the available event, so a kick suppressed by it is never lost).
    mutating func drain(_ used: inout UInt16, _ segments: inout [GuestSegment]) throws(VhostUserError) {
        while true {
            let avail = ring.availableIndex
            let pending = avail &- next
            if pending == 0 {
                guard eventIndex else { return }
                ring.setAvailableEvent(next)
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                if ring.availableIndex == next { return }
                continue
            }
            guard Int(pending) <= ring.size else {
                throw .ring(queue: queue, reason: "available index \(avail) is \(pending) ahead of \(next) on a \(ring.size)-entry ring")
            }
            let before = used
            for _ in 0..<pending {
                let head = ring.availableHead(next)
                next &+= 1
                try serve(head, &used, &segments)
            }
            notify(old: before, new: used)
        }
    }

    /// Walks, carries out and completes the chain at `head` (recording it in flight meanwhile).
    mutating func serve(_ head: UInt16, _ used: inout UInt16, _ segments: inout [GuestSegment]) throws(VhostUserError) {
        guard Int(head) < ring.size else { throw .ring(queue: queue, reason: "chain head \(head) is outside the \(ring.size)-entry table") }
        inflight?.begin(head, counter: counter)
        counter &+= 1
        segments.removeAll(keepingCapacity: true)
        try ChainWalker.walk(table: UnsafeRawPointer(ring.descriptors), size: ring.size, head: head, memory: memory,
                             indirect: indirect, queue: queue, into: &segments)
        let length: UInt32
        switch disk.handle(segments, scratch: scratch, log: log) {
        case let .completed(_, n): length = n
        case let .malformed(why):
            log("vhost-user: queue \(queue): request at descriptor \(head): \(why)")
            length = 0
        }
        ring.putUsed(used, id: UInt32(head), length: length)
        used &+= 1
        inflight?.completing(head)
        ring.publishUsed(used)
        inflight?.completed(head, used: used)
    }

    /// INFLIGHT_SHMEM: completes what a previous back-end took but did not finish, oldest
    /// first, and continues after them in the available ring (requests complete in order,
    /// so the ones in flight are the ones right after the used index).
    mutating func resubmit(_ used: inout UInt16, _ segments: inout [GuestSegment]) throws(VhostUserError) {
        guard let inflight else { return }
        let (heads, nextCounter) = inflight.recover(ringUsed: used)
        counter = nextCounter
        next = used &+ UInt16(truncatingIfNeeded: heads.count)
        guard !heads.isEmpty else { return }
        log("vhost-user: queue \(queue): resubmitting \(heads.count) request(s) left in flight")
        let before = used
        for head in heads { try serve(head, &used, &segments) }
        notify(old: before, new: used)
    }

    /// Signals the call descriptor unless the driver suppressed it.
    private func notify(old: UInt16, new: UInt16) {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let wanted: Bool
        if eventIndex {
            let event = ring.usedEvent
            wanted = (new &- event &- 1) < (new &- old)
        } else {
            wanted = ring.availableFlags & SplitRing.availableNoInterrupt == 0
        }
        guard wanted else { return }
        owner.callFD.withLock { fd in
            var one: UInt64 = 1
            if fd >= 0 { _ = retryingInterrupted { write(fd, &one, 8) } }
        }
    }
}
