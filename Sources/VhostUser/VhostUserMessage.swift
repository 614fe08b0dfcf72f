/// One region of a SET_MEM_TABLE message, as the front-end describes it.
public struct MemoryRegionDescription: Equatable, Sendable {
    public var guestAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
    /// The file descriptor of the region's memory (owned by whoever holds the request).
    public var fd: Int32

    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64, fd: Int32) {
        self.guestAddress = guestAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
        self.fd = fd
    }
}

/// The ring addresses of SET_VRING_ADDR (front-end user addresses).
public struct VringAddresses: Equatable, Sendable {
    public var index: Int
    public var flags: UInt32
    public var descriptors: UInt64
    public var used: UInt64
    public var available: UInt64
    public var log: UInt64
}

/// A decoded, validated front-end request. File descriptors in it belong to it.
public enum VhostUserMessage: Equatable, Sendable {
    case getFeatures
    case setFeatures(UInt64)
    case setOwner
    case resetOwner
    case setMemTable([MemoryRegionDescription])
    case setVringNum(index: Int, num: UInt32)
    case setVringAddr(VringAddresses)
    case setVringBase(index: Int, num: UInt32)
    case getVringBase(index: Int)
    /// Kick, call and err: `fd` is nil when the front-end set the no-descriptor bit.
    case setVringKick(index: Int, fd: Int32?)
    case setVringCall(index: Int, fd: Int32?)
    case setVringErr(index: Int, fd: Int32?)
    case getProtocolFeatures
    case setProtocolFeatures(UInt64)
    case getQueueNum
    case setVringEnable(index: Int, enable: Bool)
    case getConfig(offset: UInt32, size: UInt32, flags: UInt32)
    case setConfig(offset: UInt32, size: UInt32, flags: UInt32)
    /// The in-flight area: its size and offset in the file, for `queues` queues of `queueSize`.
    case getInflightFD(queues: Int, queueSize: Int)
    case setInflightFD(size: UInt64, offset: UInt64, queues: Int, queueSize: Int, fd: Int32)

    /// Whether the protocol defines an answer for this request (so REPLY_ACK adds none).
    public var hasReply: Bool {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getQueueNum, .getVringBase, .getConfig, .getInflightFD: return true
        default: return false
        }
    }

    /// The descriptors the message owns, to close when it is dropped unused.
    public var fds: [Int32] {
        switch self {
        case let .setMemTable(regions): return regions.map(\.fd)
        case let .setVringKick(_, fd), let .setVringCall(_, fd), let .setVringErr(_, fd): return fd.map { [$0] } ?? []
        case let .setInflightFD(_, _, _, _, fd): return [fd]
        default: return []
        }
    }
}

/// The 12-byte message header, in host (little-endian) order.
public struct VhostUserHeader: Equatable, Sendable {
    public static let size = 12
    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    /// Parses and checks a header from the front-end: version 1, no reply bit, no
    /// unknown flag, a payload within the limit.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(VhostUserError) -> VhostUserHeader {
        guard bytes.count >= size else { throw .malformed(request: 0, reason: "header has \(bytes.count) of 12 bytes") }
        let h = VhostUserHeader(request: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                                flags: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                                size: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        guard h.flags & VhostUserFlags.versionMask == VhostUserFlags.version else {
            throw .malformed(request: h.request, reason: "protocol version \(h.flags & VhostUserFlags.versionMask), only 1 exists")
        }
        guard h.flags & VhostUserFlags.reply == 0 else { throw .malformed(request: h.request, reason: "the reply flag is set on a request") }
        let known = VhostUserFlags.versionMask | VhostUserFlags.reply | VhostUserFlags.needReply
        guard h.flags & ~known == 0 else {
            throw .malformed(request: h.request, reason: "unknown flag bits 0x\(String(h.flags & ~known, radix: 16))")
        }
        guard h.size <= UInt32(VhostUserLimits.maxPayload) else {
            throw .malformed(request: h.request, reason: "payload of \(h.size) bytes exceeds \(VhostUserLimits.maxPayload)")
        }
        return h
    }

    public var needsReply: Bool { flags & VhostUserFlags.needReply != 0 }

    /// The header as bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.size)
        for v in [request, flags, size] { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        return out
    }
}

extension VhostUserMessage {
    /// Decodes a request from its header, payload and the descriptors that came with it,
    /// checking every field. A request takes exactly the descriptors it defines; any
    /// mismatch is an error (the caller then closes all of `fds`).
    public static func decode(_ header: VhostUserHeader, payload: UnsafeRawBufferPointer,
                              fds: [Int32]) throws(VhostUserError) -> VhostUserMessage {
        let r = header.request
        guard payload.count == Int(header.size) else {
            throw .malformed(request: r, reason: "payload has \(payload.count) bytes, header says \(header.size)")
        }
        func fail(_ why: String) -> VhostUserError { .malformed(request: r, reason: why) }
        func expect(size: Int, fds want: Int = 0) throws(VhostUserError) {
            guard payload.count == size else { throw fail("payload of \(payload.count) bytes, expected \(size)") }
            guard fds.count == want else { throw fail("\(fds.count) file descriptors, expected \(want)") }
        }
        func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: payload.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        func ringIndex(_ v: UInt32) throws(VhostUserError) -> Int {
            guard v < UInt32(VhostUserLimits.maxQueues) else { throw fail("queue index \(v) is out of range") }
            return Int(v)
        }
        /// Kick/call/err: u64 with the queue in bits 0-7 and "no descriptor" in bit 8.
        func ringFD() throws(VhostUserError) -> (Int, Int32?) {
            guard payload.count == 8 else { throw fail("payload of \(payload.count) bytes, expected 8") }
            let v = u64(0)
            guard v & ~UInt64(0x1ff) == 0 else { throw fail("unknown bits in 0x\(String(v, radix: 16))") }
            let noFD = v & 0x100 != 0
            guard fds.count == (noFD ? 0 : 1) else {
                throw fail("\(fds.count) file descriptors with the no-descriptor bit \(noFD ? "set" : "clear")")
            }
            return (try ringIndex(UInt32(v & 0xff)), noFD ? nil : fds[0])
        }

        switch r {
        case VhostUserRequest.getFeatures: try expect(size: 0); return .getFeatures
        case VhostUserRequest.getProtocolFeatures: try expect(size: 0); return .getProtocolFeatures
        case VhostUserRequest.getQueueNum: try expect(size: 0); return .getQueueNum
        case VhostUserRequest.setOwner: try expect(size: 0); return .setOwner
        case VhostUserRequest.resetOwner: try expect(size: 0); return .resetOwner
        case VhostUserRequest.setFeatures: try expect(size: 8); return .setFeatures(u64(0))
        case VhostUserRequest.setProtocolFeatures: try expect(size: 8); return .setProtocolFeatures(u64(0))
        case VhostUserRequest.setVringNum, VhostUserRequest.setVringBase, VhostUserRequest.getVringBase,
             VhostUserRequest.setVringEnable:
            try expect(size: 8)
            let index = try ringIndex(u32(0)), num = u32(4)
            switch r {
            case VhostUserRequest.setVringNum: return .setVringNum(index: index, num: num)
            case VhostUserRequest.setVringBase: return .setVringBase(index: index, num: num)
            case VhostUserRequest.getVringBase: return .getVringBase(index: index)
            default:
                guard num <= 1 else { throw fail("enable value \(num) is neither 0 nor 1") }
                return .setVringEnable(index: index, enable: num == 1)
            }
        case VhostUserRequest.setVringAddr:
            try expect(size: 40)
            let flags = u32(4)
            guard flags & ~1 == 0 else { throw fail("unknown address flags 0x\(String(flags, radix: 16))") }
            return .setVringAddr(VringAddresses(index: try ringIndex(u32(0)), flags: flags, descriptors: u64(8),
                                                used: u64(16), available: u64(24), log: u64(32)))
        case VhostUserRequest.setVringKick: let (i, fd) = try ringFD(); return .setVringKick(index: i, fd: fd)
        case VhostUserRequest.setVringCall: let (i, fd) = try ringFD(); return .setVringCall(index: i, fd: fd)
        case VhostUserRequest.setVringErr: let (i, fd) = try ringFD(); return .setVringErr(index: i, fd: fd)
        case VhostUserRequest.setMemTable:
            guard payload.count >= 8 else { throw fail("payload of \(payload.count) bytes is shorter than the region count") }
            let n = Int(u32(0))
            guard (1...VhostUserLimits.maxRegions).contains(n) else { throw fail("\(n) regions (1 to \(VhostUserLimits.maxRegions) allowed)") }
            try expect(size: 8 + 32 * n, fds: n)
            var regions: [MemoryRegionDescription] = []
            for i in 0..<n {
                let at = 8 + 32 * i
                let region = MemoryRegionDescription(guestAddress: u64(at), size: u64(at + 8), userAddress: u64(at + 16),
                                                     mmapOffset: u64(at + 24), fd: fds[i])
                guard region.size > 0 else { throw fail("region \(i) has size 0") }
                guard region.guestAddress.addingReportingOverflow(region.size).overflow == false,
                      region.userAddress.addingReportingOverflow(region.size).overflow == false,
                      region.mmapOffset.addingReportingOverflow(region.size).overflow == false,
                      region.mmapOffset + region.size <= UInt64(Int.max) else {
                    throw fail("region \(i) wraps around the address space")
                }
                for (j, other) in regions.enumerated() {
                    if region.guestAddress < other.guestAddress + other.size && other.guestAddress < region.guestAddress + region.size {
                        throw fail("regions \(j) and \(i) overlap in guest physical addresses")
                    }
                    if region.userAddress < other.userAddress + other.size && other.userAddress < region.userAddress + region.size {
                        throw fail("regions \(j) and \(i) overlap in front-end addresses")
                    }
                }
                regions.append(region)
            }
            return .setMemTable(regions)
        case VhostUserRequest.getConfig, VhostUserRequest.setConfig:
            guard payload.count >= 12 else { throw fail("payload of \(payload.count) bytes is shorter than the config header") }
            let offset = u32(0), size = u32(4), flags = u32(8)
            guard UInt64(offset) + UInt64(size) <= UInt64(VhostUserLimits.maxConfigSize) else {
                throw fail("config range [\(offset), +\(size)) is outside the \(VhostUserLimits.maxConfigSize)-byte space")
            }
            try expect(size: 12 + Int(size))
            return r == VhostUserRequest.getConfig ? .getConfig(offset: offset, size: size, flags: flags)
                                                   : .setConfig(offset: offset, size: size, flags: flags)
        case VhostUserRequest.getInflightFD, VhostUserRequest.setInflightFD:
            let get = r == VhostUserRequest.getInflightFD
            try expect(size: 24, fds: get ? 0 : 1)
            let queues = Int(UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: 16, as: UInt16.self)))
            let queueSize = Int(UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: 18, as: UInt16.self)))
            return get ? .getInflightFD(queues: queues, queueSize: queueSize)
                       : .setInflightFD(size: u64(0), offset: u64(8), queues: queues, queueSize: queueSize, fd: fds[0])
        default:
            throw fail("unknown or unsupported request")
        }
    }
}
