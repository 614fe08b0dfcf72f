import Synchronization

/// The TCMU shared memory region: a mailbox, the command ring and the data area
/// (layout from the kernel's `linux/target_core_user.h`). The kernel appends command
/// entries at `cmd_head`; userspace answers in ring order at `cmd_tail`, writing each
/// response over the oldest fetched entry with the completed command's id, which lets
/// commands complete out of order.
///
/// Every offset and length read from the region is checked against its bounds, so a
/// corrupt ring fails a command instead of touching memory outside the region.
public final class CommandRing: @unchecked Sendable {
    // Mailbox offsets.
    static let mbVersion = 0, mbFlags = 2, mbCmdrOff = 4, mbCmdrSize = 8, mbCmdHead = 12, mbCmdTail = 64
    // Entry header: u32 len_op, u16 cmd_id, u8 kflags, u8 uflags.
    static let opPad: UInt32 = 0, opCmd: UInt32 = 1
    static let uflagUnknownOp: UInt8 = 0x1
    // Request part (cdb_off is 8-byte aligned: 4 bytes of padding after the counts).
    static let reqIovCount = 8, reqCdbOff = 24, reqIov = 48
    // Response part.
    static let rspStatus = 8, rspSense = 16, senseSize = 96
    static let entryMinimum = 112

    public let base: UnsafeMutableRawPointer
    public let size: Int
    let ringOffset: Int
    let ringSize: Int
    /// Where the next command will be fetched from (userspace's own cursor).
    private var fetchCursor: Int
    private let completionLock = Mutex(())
    /// The first bytes of the last malformed entry, for diagnostics.
    public private(set) var lastMalformedEntry: [UInt8] = []

    /// One fetched command: copied out of the ring, so its slot can be reused.
    public struct Command: @unchecked Sendable {
        public var id: UInt16
        public var cdb: [UInt8]
        public var data: SCSIBuffers
        /// Set when the entry was malformed; the command is answered with this status.
        public var invalid: SCSIStatus?
    }

    public enum RingError: Error, CustomStringConvertible {
        case badMailbox(String)
        public var description: String { switch self { case let .badMailbox(s): return "TCMU mailbox: \(s)" } }
    }

    /// Wraps a mapped region of `size` bytes.
    public init(base: UnsafeMutableRawPointer, size: Int) throws {
        self.base = base
        self.size = size
        guard size >= 128 else { throw RingError.badMailbox("region of \(size) bytes is too small") }
        ringOffset = Int(base.loadUnaligned(fromByteOffset: Self.mbCmdrOff, as: UInt32.self))
        ringSize = Int(base.loadUnaligned(fromByteOffset: Self.mbCmdrSize, as: UInt32.self))
        guard ringOffset >= 128, ringSize >= Self.entryMinimum, ringOffset + ringSize <= size else {
            throw RingError.badMailbox("command ring [\(ringOffset), +\(ringSize)) does not fit in \(size) bytes")
        }
        fetchCursor = Int(base.loadUnaligned(fromByteOffset: Self.mbCmdTail, as: UInt32.self))
        guard fetchCursor < ringSize else { throw RingError.badMailbox("cmd_tail \(fetchCursor) outside the ring") }
    }

    public var version: UInt16 { base.loadUnaligned(fromByteOffset: Self.mbVersion, as: UInt16.self) }
    public var flags: UInt16 { base.loadUnaligned(fromByteOffset: Self.mbFlags, as: UInt16.self) }

    private var head: Int {
        atomicMemoryFence(ordering: .acquiring)
        return Int(base.loadUnaligned(fromByteOffset: Self.mbCmdHead, as: UInt32.self))
    }

    private var tail: Int {
        get { Int(base.loadUnaligned(fromByteOffset: Self.mbCmdTail, as: UInt32.self)) }
        set {
            atomicMemoryFence(ordering: .releasing)
            base.storeBytes(of: UInt32(newValue), toByteOffset: Self.mbCmdTail, as: UInt32.self)
        }
    }

    private func entry(_ at: Int) -> UnsafeMutableRawPointer { base + ringOffset + at }

    /// Length and op of the entry at ring offset `at`, or nil if the header is impossible.
    private func header(_ at: Int) -> (len: Int, op: UInt32)? {
        guard at + 8 <= ringSize else { return nil }
        let lenOp = entry(at).loadUnaligned(as: UInt32.self)
        let len = Int(lenOp & ~7)
        guard len >= 8, len % 8 == 0, at + len <= ringSize else { return nil }
        return (len, lenOp & 7)
    }

    /// Fetches every new command. Malformed entries come back with `invalid` set; a
    /// header that breaks the ring stops the fetch (and returns what was read so far).
    public func fetch() -> [Command] {
        var out: [Command] = []
        let h = head
        guard h < ringSize else { return out }
        while fetchCursor != h {
            guard let (len, op) = header(fetchCursor) else { break }
            let e = entry(fetchCursor)
            fetchCursor = (fetchCursor + len) % ringSize
            guard op == Self.opCmd else {
                if op != Self.opPad { e.storeBytes(of: e.load(fromByteOffset: 7, as: UInt8.self) | Self.uflagUnknownOp, toByteOffset: 7, as: UInt8.self) }
                continue
            }
            let id = e.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
            guard len >= Self.entryMinimum else {
                out.append(Command(id: id, cdb: [], data: SCSIBuffers([]), invalid: .invalidFieldInCDB))
                continue
            }
            let iovCount = Int(e.loadUnaligned(fromByteOffset: Self.reqIovCount, as: UInt32.self))
            let cdbOff = Int(truncatingIfNeeded: e.loadUnaligned(fromByteOffset: Self.reqCdbOff, as: UInt64.self))
            var segments: [UnsafeMutableRawBufferPointer] = []
            var bad = iovCount > (len - Self.reqIov) / 16 || iovCount < 0
            if !bad {
                for i in 0..<iovCount {
                    let o = Self.reqIov + 16 * i
                    let b = Int(truncatingIfNeeded: e.loadUnaligned(fromByteOffset: o, as: UInt64.self))
                    let l = Int(truncatingIfNeeded: e.loadUnaligned(fromByteOffset: o + 8, as: UInt64.self))
                    if l == 0 { continue }
                    guard b >= ringOffset, l > 0, b <= size, l <= size - b else { bad = true; break }
                    segments.append(UnsafeMutableRawBufferPointer(start: base + b, count: l))
                }
            }
            var cdb: [UInt8] = []
            if !bad, cdbOff > 0, cdbOff < size {
                let n = SCSIDisk.cdbLength(opcode: (base + cdbOff).load(as: UInt8.self))
                if n > 0 && cdbOff + n <= size {
                    cdb = Array(UnsafeRawBufferPointer(start: base + cdbOff, count: n))
                }
            }
            if bad || cdb.isEmpty {
                lastMalformedEntry = Array(UnsafeRawBufferPointer(start: e, count: min(len, 128)))
            }
            out.append(Command(id: id, cdb: cdb, data: SCSIBuffers(segments),
                               invalid: bad ? .invalidFieldInCDB : (cdb.isEmpty ? .invalidOpcode : nil)))
        }
        return out
    }

    /// Posts the response of command `id` into the oldest unanswered slot.
    /// Returns false if there is no slot to answer (the ring is inconsistent).
    @discardableResult
    public func complete(id: UInt16, status: SCSIStatus) -> Bool {
        completionLock.withLock { _ in
            var t = tail
            // Skip padding and unknown entries up to the fetch cursor.
            while t != fetchCursor {
                guard let (len, op) = header(t) else { return false }
                if op == Self.opCmd { break }
                t = (t + len) % ringSize
            }
            guard t != fetchCursor, let (len, _) = header(t) else {
                tail = t
                return false
            }
            let e = entry(t)
            e.storeBytes(of: id, toByteOffset: 4, as: UInt16.self)
            e.storeBytes(of: status.status, toByteOffset: Self.rspStatus, as: UInt8.self)
            let sense = status.senseData
            for i in 0..<Self.senseSize {
                e.storeBytes(of: i < sense.count ? sense[i] : 0, toByteOffset: Self.rspSense + i, as: UInt8.self)
            }
            tail = (t + len) % ringSize
            return true
        }
    }

    /// Command entries between `cmd_tail` and `cmd_head`: commands the kernel put in the
    /// ring that nobody has answered. Right after a server died, these are what it left
    /// behind, taken or not (the walk stops at an impossible header).
    public var unansweredCommands: Int {
        completionLock.withLock { _ in
            let h = head
            guard h < ringSize else { return 0 }
            var t = tail, n = 0, steps = 0
            while t != h, steps <= ringSize / 8, let (len, op) = header(t) {
                if op == Self.opCmd { n += 1 }
                t = (t + len) % ringSize
                steps += 1
            }
            return n
        }
    }

    /// Forgets what was fetched and fetches again from `cmd_tail`: after the kernel reset
    /// the ring (it then sets `cmd_head` and `cmd_tail` to 0).
    public func resynchronize() throws {
        try completionLock.withLock { _ in
            let t = tail
            guard t < ringSize else { throw RingError.badMailbox("cmd_tail \(t) outside the ring after a reset") }
            fetchCursor = t
        }
    }

    /// Skips what is left to answer (padding after the last command).
    public func skipTrailingPadding() {
        completionLock.withLock { _ in
            var t = tail
            while t != fetchCursor, let (len, op) = header(t), op != Self.opCmd { t = (t + len) % ringSize }
            tail = t
        }
    }
}
