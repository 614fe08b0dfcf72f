import Glibc

/// The guest's memory as the back-end sees it: the regions of the last SET_MEM_TABLE,
/// each mapped from its file descriptor. Every address the guest or the front-end hands
/// over is translated here, and a range that does not lie wholly inside one region has
/// no translation. Immutable; a new table is a new object, and the old mappings go away
/// when the last queue thread lets go of it.
public final class GuestMemory: @unchecked Sendable {
    struct Region {
        var guestAddress: UInt64
        var size: UInt64
        var userAddress: UInt64
        var host: UnsafeMutableRawPointer
        /// The mapping to unmap (nil for memory the object does not own).
        var mapping: UnsafeMutableRawPointer?
        var mappingLength: Int
    }

    let regions: [Region]

    private init(regions: [Region]) { self.regions = regions }

    deinit {
        for r in regions { if let m = r.mapping { munmap(m, r.mappingLength) } }
    }

    /// Maps every region of a memory table (read-write, shared). The descriptors are
    /// closed whatever happens; a region whose file is smaller than it claims, or that
    /// cannot be mapped, fails the whole table and nothing stays mapped.
    public static func map(_ table: [MemoryRegionDescription]) throws(VhostUserError) -> GuestMemory {
        defer { for r in table { close(r.fd) } }
        var regions: [Region] = []
        func undo() { for r in regions { if let m = r.mapping { munmap(m, r.mappingLength) } } }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        for (i, d) in table.enumerated() {
            var st = stat()
            guard fstat(d.fd, &st) == 0 else {
                let e = errno
                undo()
                throw .refused(request: VhostUserRequest.setMemTable, reason: "region \(i): fstat: \(String(cString: strerror(e)))")
            }
            // Touching a shared mapping past the end of its file raises SIGBUS: refuse it up front.
            guard (st.st_mode & S_IFMT) == S_IFREG, UInt64(st.st_size) >= d.mmapOffset + d.size else {
                undo()
                throw .refused(request: VhostUserRequest.setMemTable,
                               reason: "region \(i): its file (\(st.st_size) bytes) does not hold [\(d.mmapOffset), +\(d.size))")
            }
            let start = d.mmapOffset & ~(page - 1)
            let lead = Int(d.mmapOffset - start)
            guard d.size <= UInt64(Int.max - lead) else {
                undo()
                throw .refused(request: VhostUserRequest.setMemTable, reason: "region \(i) is too large")
            }
            let length = Int(d.size) + lead
            let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, d.fd, off_t(start))
            guard let p, p != MAP_FAILED else {
                let e = errno
                undo()
                throw .refused(request: VhostUserRequest.setMemTable, reason: "region \(i): mmap: \(String(cString: strerror(e)))")
            }
            regions.append(Region(guestAddress: d.guestAddress, size: d.size, userAddress: d.userAddress,
                                  host: p + lead, mapping: p, mappingLength: length))
        }
        return GuestMemory(regions: regions)
    }

    /// Memory the caller owns and keeps alive (tests and fuzzing): each buffer is a region
    /// at `guestAddress`, with front-end address `userAddress`.
    public static func unowned(_ buffers: [(guestAddress: UInt64, userAddress: UInt64, bytes: UnsafeMutableRawBufferPointer)]) -> GuestMemory {
        GuestMemory(regions: buffers.compactMap { b in
            guard let base = b.bytes.baseAddress, b.bytes.count > 0 else { return nil }
            return Region(guestAddress: b.guestAddress, size: UInt64(b.bytes.count), userAddress: b.userAddress,
                          host: base, mapping: nil, mappingLength: 0)
        })
    }

    /// The host address of guest-physical `[address, address+length)`, if that range lies
    /// inside one region (a zero length needs its address inside a region too).
    @inline(__always)
    public func translate(guest address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions where address >= r.guestAddress {
            let off = address - r.guestAddress
            if off < r.size && length <= r.size - off { return r.host + Int(off) }
        }
        return nil
    }

    /// The host address of front-end address `[address, address+length)` (ring addresses).
    public func translate(user address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for r in regions where address >= r.userAddress {
            let off = address - r.userAddress
            if off < r.size && length <= r.size - off { return r.host + Int(off) }
        }
        return nil
    }

    /// Total bytes of guest memory.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }
}
