import Synchronization

/// A split virtqueue's three areas (descriptor table, available ring, used ring) as
/// host pointers into guest memory, checked to lie inside it. The guest writes these
/// areas concurrently: every field is read once into a local before it is trusted.
struct SplitRing: @unchecked Sendable {
    let size: Int
    let descriptors: UnsafeMutableRawPointer
    let available: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer

    static let availableNoInterrupt: UInt16 = 1
    static let usedNoNotify: UInt16 = 1

    /// Bytes of each area for `size` entries (with the event-index words).
    static func areaSizes(_ size: Int) -> (descriptors: Int, available: Int, used: Int) {
        (16 * size, 4 + 2 * size + 2, 4 + 8 * size + 2)
    }

    /// Translates the front-end's ring addresses through `memory`.
    static func map(_ a: VringAddresses, size: Int, memory: GuestMemory, queue: Int) throws(VhostUserError) -> SplitRing {
        let s = areaSizes(size)
        func area(_ addr: UInt64, _ len: Int, _ align: UInt64, _ what: String) throws(VhostUserError) -> UnsafeMutableRawPointer {
            guard addr % align == 0 else { throw .ring(queue: queue, reason: "\(what) address 0x\(String(addr, radix: 16)) is not \(align)-byte aligned") }
            guard let p = memory.translate(user: addr, length: UInt64(len)) else {
                throw .ring(queue: queue, reason: "\(what) [0x\(String(addr, radix: 16)), +\(len)) is outside the memory table")
            }
            return p
        }
        return SplitRing(size: size,
                         descriptors: try area(a.descriptors, s.descriptors, 16, "descriptor table"),
                         available: try area(a.available, s.available, 2, "available ring"),
                         used: try area(a.used, s.used, 4, "used ring"))
    }

    @inline(__always) private func load16(_ p: UnsafeMutableRawPointer, _ at: Int) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt16.self))
    }

    @inline(__always) private func store16(_ p: UnsafeMutableRawPointer, _ at: Int, _ v: UInt16) {
        p.storeBytes(of: v.littleEndian, toByteOffset: at, as: UInt16.self)
    }

    /// The driver's available index, with acquire order for the entries before it.
    var availableIndex: UInt16 {
        let v = load16(available, 2)
        atomicMemoryFence(ordering: .acquiring)
        return v
    }

    var availableFlags: UInt16 { load16(available, 0) }

    /// The head of the chain in available slot `index` (mod size).
    func availableHead(_ index: UInt16) -> UInt16 { load16(available, 4 + 2 * (Int(index) % size)) }

    /// EVENT_IDX: the driver wants an interrupt once the used index passes this.
    var usedEvent: UInt16 { load16(available, 4 + 2 * size) }

    var usedIndex: UInt16 { load16(used, 2) }

    /// EVENT_IDX: tells the driver to kick once the available index passes `v`.
    func setAvailableEvent(_ v: UInt16) { store16(used, 4 + 8 * size, v) }

    func setUsedFlags(_ v: UInt16) { store16(used, 0, v) }

    /// Writes used element `index` (mod size).
    func putUsed(_ index: UInt16, id: UInt32, length: UInt32) {
        let at = 4 + 8 * (Int(index) % size)
        used.storeBytes(of: id.littleEndian, toByteOffset: at, as: UInt32.self)
        used.storeBytes(of: length.littleEndian, toByteOffset: at + 4, as: UInt32.self)
    }

    /// Publishes the used index after the elements (release order).
    func publishUsed(_ index: UInt16) {
        atomicMemoryFence(ordering: .releasing)
        store16(used, 2, index)
    }
}

/// One guest buffer of a request: host memory the guest lent, read-only or writable.
public struct GuestSegment: Equatable, Sendable {
    public var length: Int
    public var writable: Bool
    /// Host address as an integer (a pointer is not Sendable); see `pointer`.
    public var address: UInt

    @inline(__always) var pointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: address)! }
}

/// The descriptor-chain walker: follows a chain from its head through direct and
/// indirect descriptors and turns it into host segments, or fails on anything a correct
/// driver never writes (head or next out of range, a chain longer than its table,
/// which is how a loop shows, an indirect table inside an indirect table, a buffer
/// not wholly inside one guest memory region).
public enum ChainWalker {
    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4

    /// Walks the chain at `head` of the `size`-entry table at `table`; appends its
    /// buffers (zero-length ones skipped) to `segments`.
    public static func walk(table: UnsafeRawPointer, size: Int, head: UInt16, memory: GuestMemory,
                            indirect: Bool, queue: Int, into segments: inout [GuestSegment]) throws(VhostUserError) {
        var current = table
        var count = size
        var index = Int(head)
        var steps = 0
        var nested = false
        guard index < count else { throw .ring(queue: queue, reason: "chain head \(index) is outside the \(size)-entry table") }
        while true {
            steps += 1
            guard steps <= count else {
                throw .ring(queue: queue, reason: "descriptor chain from \(head) is longer than its \(count)-entry table (a loop)")
            }
            let at = 16 * index
            let addr = UInt64(littleEndian: current.loadUnaligned(fromByteOffset: at, as: UInt64.self))
            let len = UInt32(littleEndian: current.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self))
            let flags = UInt16(littleEndian: current.loadUnaligned(fromByteOffset: at + 12, as: UInt16.self))
            let next = UInt16(littleEndian: current.loadUnaligned(fromByteOffset: at + 14, as: UInt16.self))
            if flags & flagIndirect != 0 {
                guard indirect else { throw .ring(queue: queue, reason: "indirect descriptor, but INDIRECT_DESC was not negotiated") }
                guard !nested else { throw .ring(queue: queue, reason: "indirect descriptor inside an indirect table") }
                guard flags & flagNext == 0 else { throw .ring(queue: queue, reason: "indirect descriptor with NEXT set") }
                guard len > 0, len % 16 == 0, Int(len / 16) <= VhostUserLimits.maxQueueSize else {
                    throw .ring(queue: queue, reason: "indirect table of \(len) bytes")
                }
                guard let p = memory.translate(guest: addr, length: UInt64(len)) else {
                    throw .ring(queue: queue, reason: "indirect table [0x\(String(addr, radix: 16)), +\(len)) is outside guest memory")
                }
                current = UnsafeRawPointer(p)
                count = Int(len / 16)
                index = 0
                steps = 0
                nested = true
                continue
            }
            if len > 0 {
                guard let p = memory.translate(guest: addr, length: UInt64(len)) else {
                    throw .ring(queue: queue, reason: "buffer [0x\(String(addr, radix: 16)), +\(len)) is outside guest memory")
                }
                segments.append(GuestSegment(length: Int(len), writable: flags & flagWrite != 0,
                                             address: UInt(bitPattern: p)))
            }
            guard flags & flagNext != 0 else { return }
            index = Int(next)
            guard index < count else { throw .ring(queue: queue, reason: "next index \(index) is outside the \(count)-entry table") }
        }
    }
}
