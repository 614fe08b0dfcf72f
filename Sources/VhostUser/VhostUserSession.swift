import Glibc
import Threading

/// One front-end connection: answers the vhost-user requests in order, owns the guest
/// memory mapping and the queues, and tears everything down when the connection ends.
final class VhostUserSession: @unchecked Sendable {
    let channel: MessageChannel
    let disk: VirtioBlkDisk
    let queueCount: Int
    let log: @Sendable (String) -> Void

    static let protocolFeatures = VhostUserProtocolFeature.multiQueue | VhostUserProtocolFeature.replyAck
        | VhostUserProtocolFeature.config | VhostUserProtocolFeature.inflightShmem
    /// Queue size assumed for seg_max before SET_VRING_NUM (QEMU's default is 128).
    static let defaultQueueSize = 128

    private var queues: [VirtQueue]
    private var memory: GuestMemory?
    private var inflight: InflightRegion?
    private var features: UInt64 = 0
    private var featuresSet = false
    private var protocolFeatures: UInt64 = 0

    init(fd: Int32, disk: VirtioBlkDisk, queues: Int, log: @escaping @Sendable (String) -> Void) {
        channel = MessageChannel(fd: fd)
        self.disk = disk
        queueCount = queues
        self.queues = (0..<queues).map { VirtQueue(index: $0) }
        self.log = log
    }

    /// Serves requests until the front-end disconnects or breaks the protocol; returns why it ended.
    func run() -> VhostUserError {
        defer { teardown() }
        while true {
            let header: VhostUserHeader, message: VhostUserMessage
            do { (header, message) = try channel.receive() } catch {
                if error != .closed { log("\(error); closing the connection") }
                return error
            }
            do {
                try handle(header, message)
            } catch {
                if case .refused = error, header.needsReply, protocolFeatures & VhostUserProtocolFeature.replyAck != 0,
                   !message.hasReply {
                    log("\(error)")
                    do { try ack(header, success: false); continue } catch { return error }
                }
                log("\(error); closing the connection")
                return error
            }
        }
    }

    private func teardown() {
        for q in queues { q.reset() }
        memory = nil
        inflight = nil
        do { try disk.file.flush() } catch { log("vhost-user: flush at disconnect failed: \(error)") }
    }

    private func ack(_ header: VhostUserHeader, success: Bool) throws(VhostUserError) {
        var w = PayloadWriter()
        w.u64(success ? 0 : 1)
        try channel.reply(to: header.request, payload: w.bytes)
    }

    private func queue(_ index: Int, _ request: UInt32) throws(VhostUserError) -> VirtQueue {
        guard index < queueCount else { throw .refused(request: request, reason: "queue \(index) does not exist (\(queueCount) queues)") }
        return queues[index]
    }

    /// Starts or stops `q` to match its configuration.
    private func refresh(_ q: VirtQueue) throws(VhostUserError) {
        if q.ready(memory: memory) {
            if !q.isRunning, let memory {
                try q.start(memory: memory, inflight: inflight?.tracker(queue: q.index, ringSize: q.size),
                            disk: disk, features: features, log: log)
            }
        } else {
            q.stop()
        }
    }

    private func handle(_ header: VhostUserHeader, _ message: VhostUserMessage) throws(VhostUserError) {
        let r = header.request
        switch message {
        case .getFeatures:
            var w = PayloadWriter()
            w.u64(disk.features)
            try channel.reply(to: r, payload: w.bytes)
        case let .setFeatures(f):
            guard f & ~disk.features == 0 else {
                throw .refused(request: r, reason: "features 0x\(String(f & ~disk.features, radix: 16)) were not offered")
            }
            for q in queues where q.isRunning { q.stop() }
            features = f
            featuresSet = true
            // Without the protocol-features bit there is no SET_VRING_ENABLE: rings are enabled.
            if f & VirtioFeature.protocolFeatures == 0 { for q in queues { q.enabled = true } }
            for q in queues { try refresh(q) }
        case .getProtocolFeatures:
            var w = PayloadWriter()
            w.u64(Self.protocolFeatures)
            try channel.reply(to: r, payload: w.bytes)
        case let .setProtocolFeatures(f):
            guard f & ~Self.protocolFeatures == 0 else {
                throw .refused(request: r, reason: "protocol features 0x\(String(f & ~Self.protocolFeatures, radix: 16)) were not offered")
            }
            protocolFeatures = f
        case .getQueueNum:
            var w = PayloadWriter()
            w.u64(UInt64(queueCount))
            try channel.reply(to: r, payload: w.bytes)
        case .setOwner:
            break
        case .resetOwner:
            for q in queues { q.reset() }
            memory = nil
            features = 0
            featuresSet = false
            protocolFeatures = 0
        case let .setMemTable(regions):
            let new = try GuestMemory.map(regions)
            let running = queues.filter(\.isRunning)
            for q in running { q.stop() }
            memory = new
            for q in queues {
                do { try refresh(q) } catch {
                    log("\(error)")
                    q.failure = error
                }
            }
        case let .setVringNum(index, num):
            let q = try queue(index, r)
            guard num >= 1, num <= UInt32(VhostUserLimits.maxQueueSize), num & (num - 1) == 0 else {
                throw .refused(request: r, reason: "queue size \(num) is not a power of two up to \(VhostUserLimits.maxQueueSize)")
            }
            guard !q.isRunning else { throw .refused(request: r, reason: "queue \(index) is running") }
            q.size = Int(num)
        case let .setVringAddr(a):
            let q = try queue(a.index, r)
            guard !q.isRunning else { throw .refused(request: r, reason: "queue \(a.index) is running") }
            guard q.size > 0 else { throw .refused(request: r, reason: "queue \(a.index) has no size yet (SET_VRING_NUM)") }
            if let memory {
                do { _ = try SplitRing.map(a, size: q.size, memory: memory, queue: a.index) } catch {
                    throw .refused(request: r, reason: "\(error)")
                }
            }
            q.addresses = a
            q.failure = nil
            try refresh(q)
        case let .setVringBase(index, num):
            let q = try queue(index, r)
            guard !q.isRunning else { throw .refused(request: r, reason: "queue \(index) is running") }
            guard num <= 0xffff else { throw .refused(request: r, reason: "base \(num) does not fit a split ring index") }
            q.nextAvailable = UInt16(num)
        case let .getVringBase(index):
            let q = try queue(index, r)
            q.stop()
            q.started = false
            if q.kickFD >= 0 { close(q.kickFD) }
            q.kickFD = -1
            var w = PayloadWriter()
            w.u32(UInt32(index))
            w.u32(UInt32(q.nextAvailable))
            try channel.reply(to: r, payload: w.bytes)
        case let .setVringKick(index, fd):
            guard index < queueCount else {
                if let fd { close(fd) }
                throw .refused(request: r, reason: "queue \(index) does not exist (\(queueCount) queues)")
            }
            let q = queues[index]
            q.stop()
            if q.kickFD >= 0 { close(q.kickFD) }
            q.kickFD = fd ?? -1
            q.started = true
            q.failure = nil
            try refresh(q)
        case let .setVringCall(index, fd), let .setVringErr(index, fd):
            guard index < queueCount else {
                if let fd { close(fd) }
                throw .refused(request: r, reason: "queue \(index) does not exist (\(queueCount) queues)")
            }
            queues[index].replaceNotifier(call: r == VhostUserRequest.setVringCall, fd: fd ?? -1)
        case let .setVringEnable(index, enable):
            let q = try queue(index, r)
            q.enabled = enable
            try refresh(q)
        case let .getConfig(offset, size, flags):
            var space = disk.configSpace(queues: queueCount, queueSize: queues.first.map { $0.size > 0 ? $0.size : Self.defaultQueueSize } ?? Self.defaultQueueSize)
            space += [UInt8](repeating: 0, count: VhostUserLimits.maxConfigSize - space.count)
            var w = PayloadWriter()
            w.u32(offset); w.u32(size); w.u32(flags)
            w.bytes += space[Int(offset)..<Int(offset + size)]
            try channel.reply(to: r, payload: w.bytes)
        case .setConfig:
            throw .refused(request: r, reason: "the virtio-blk configuration is read-only")
        case let .getInflightFD(count, size):
            let (region, fd) = try InflightRegion.create(queues: count, queueSize: size)
            defer { close(fd) }
            for q in queues where q.isRunning { q.stop() }
            inflight = region
            var w = PayloadWriter()
            w.u64(UInt64(region.length)); w.u64(0); w.u16(UInt16(count)); w.u16(UInt16(size)); w.u32(0)
            try channel.reply(to: r, payload: w.bytes, fds: [fd])
            log("vhost-user: new in-flight area for \(count) queues of \(size) entries")
            for q in queues { try refresh(q) }
        case let .setInflightFD(size, offset, count, queueSize, fd):
            let region = try InflightRegion.map(fd: fd, size: size, offset: offset, queues: count, queueSize: queueSize)
            log("vhost-user: in-flight area for \(count) queues of \(queueSize) entries handed over")
            for q in queues where q.isRunning { q.stop() }
            inflight = region
            for q in queues { try refresh(q) }
        }
        if header.needsReply, protocolFeatures & VhostUserProtocolFeature.replyAck != 0, !message.hasReply {
            try ack(header, success: true)
        }
    }
}
