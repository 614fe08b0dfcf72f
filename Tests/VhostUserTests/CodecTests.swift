import Testing
@testable import VhostUser

/// The message codec on its own: every field of every request is checked.
@Suite struct CodecTests {
    func decode(_ r: UInt32, _ payload: [UInt8], fds: [Int32] = [], flags: UInt32 = VhostUserFlags.version) throws -> VhostUserMessage {
        let h = try VhostUserHeader(request: r, flags: flags, size: UInt32(payload.count)).bytes.withUnsafeBytes {
            try VhostUserHeader.parse($0)
        }
        return try payload.withUnsafeBytes { try VhostUserMessage.decode(h, payload: $0, fds: fds) }
    }

    func malformed(_ body: () throws -> Void) -> String? {
        do { try body() } catch let VhostUserError.malformed(_, why) { return why } catch { return "other: \(error)" }
        return nil
    }

    @Test func headerChecksVersionReplyFlagsAndSize() throws {
        for flags: UInt32 in [0, 2, 3, VhostUserFlags.version | VhostUserFlags.reply, VhostUserFlags.version | 0x10] {
            let why = malformed { _ = try VhostUserHeader(request: 1, flags: flags, size: 0).bytes.withUnsafeBytes { try VhostUserHeader.parse($0) } }
            #expect(why != nil, "flags \(flags)")
        }
        let big = malformed { _ = try VhostUserHeader(request: 1, flags: 1, size: 5000).bytes.withUnsafeBytes { try VhostUserHeader.parse($0) } }
        #expect(big?.contains("exceeds") == true)
        let ok = try VhostUserHeader(request: 2, flags: 1 | VhostUserFlags.needReply, size: 8).bytes.withUnsafeBytes { try VhostUserHeader.parse($0) }
        #expect(ok.needsReply && ok.size == 8)
        let short = malformed { _ = try [UInt8](repeating: 0, count: 11).withUnsafeBytes { try VhostUserHeader.parse($0) } }
        #expect(short != nil)
    }

    @Test func decodesEveryKnownRequest() throws {
        #expect(try decode(1, []) == .getFeatures)
        #expect(try decode(2, TestFrontEnd.u64(0x1_0000_0000)) == .setFeatures(0x1_0000_0000))
        #expect(try decode(8, TestFrontEnd.state(1, 256)) == .setVringNum(index: 1, num: 256))
        #expect(try decode(11, TestFrontEnd.state(0, 0)) == .getVringBase(index: 0))
        #expect(try decode(18, TestFrontEnd.state(0, 1)) == .setVringEnable(index: 0, enable: true))
        #expect(try decode(12, TestFrontEnd.u64(3), fds: [7]) == .setVringKick(index: 3, fd: 7))
        #expect(try decode(13, TestFrontEnd.u64(0x100 | 2)) == .setVringCall(index: 2, fd: nil))
        var w = PayloadWriter()
        w.u32(4); w.u32(8); w.u32(0)
        w.bytes += [UInt8](repeating: 0, count: 8)
        #expect(try decode(24, w.bytes) == .getConfig(offset: 4, size: 8, flags: 0))
        let table = TestFrontEnd.memTable([MemoryRegionDescription(guestAddress: 0, size: 4096, userAddress: 0x1000, mmapOffset: 0, fd: 5)])
        #expect(try decode(5, table, fds: [5]) == .setMemTable([MemoryRegionDescription(guestAddress: 0, size: 4096, userAddress: 0x1000, mmapOffset: 0, fd: 5)]))
    }

    @Test func rejectsUnknownRequestsWrongSizesAndDescriptorCounts() {
        #expect(malformed { _ = try decode(99, []) }?.contains("unknown") == true)
        #expect(malformed { _ = try decode(6, TestFrontEnd.u64(0)) }?.contains("unknown") == true) // SET_LOG_BASE: not offered
        #expect(malformed { _ = try decode(1, [0]) } != nil)
        #expect(malformed { _ = try decode(2, [0, 0, 0, 0]) } != nil)
        #expect(malformed { _ = try decode(1, [], fds: [3]) }?.contains("file descriptors") == true)
        #expect(malformed { _ = try decode(12, TestFrontEnd.u64(0)) }?.contains("file descriptors") == true)
        #expect(malformed { _ = try decode(12, TestFrontEnd.u64(0x100), fds: [4]) } != nil)
        #expect(malformed { _ = try decode(12, TestFrontEnd.u64(0x200), fds: [4]) }?.contains("unknown bits") == true)
        #expect(malformed { _ = try decode(8, TestFrontEnd.state(64, 128)) }?.contains("out of range") == true)
        #expect(malformed { _ = try decode(18, TestFrontEnd.state(0, 2)) } != nil)
        var w = PayloadWriter()
        w.u32(250); w.u32(8); w.u32(0)
        w.bytes += [UInt8](repeating: 0, count: 8)
        #expect(malformed { _ = try decode(24, w.bytes) }?.contains("outside") == true)
        var v = PayloadWriter()
        v.u32(0); v.u32(2)
        v.bytes += [UInt8](repeating: 0, count: 32)
        #expect(malformed { _ = try decode(9, v.bytes) }?.contains("flags") == true)
    }

    @Test func rejectsBadMemoryTables() {
        func table(_ rs: [(UInt64, UInt64, UInt64, UInt64)]) -> [UInt8] {
            TestFrontEnd.memTable(rs.map { MemoryRegionDescription(guestAddress: $0.0, size: $0.1, userAddress: $0.2, mmapOffset: $0.3, fd: -1) })
        }
        #expect(malformed { _ = try decode(5, table([(0, 0, 0, 0)]), fds: [3]) }?.contains("size 0") == true)
        #expect(malformed { _ = try decode(5, table([(0, 8192, 0, 0), (4096, 8192, 1 << 20, 0)]), fds: [3, 4]) }?.contains("overlap") == true)
        #expect(malformed { _ = try decode(5, table([(0, 4096, 0, 0), (8192, 4096, 0, 0)]), fds: [3, 4]) }?.contains("overlap") == true)
        #expect(malformed { _ = try decode(5, table([(UInt64.max - 10, 4096, 0, 0)]), fds: [3]) }?.contains("wraps") == true)
        #expect(malformed { _ = try decode(5, table([(0, 4096, 0, 0)])) }?.contains("file descriptors") == true)
        #expect(malformed { _ = try decode(5, table([(0, 4096, 0, 0)]), fds: [3, 4]) }?.contains("file descriptors") == true)
        #expect(malformed { _ = try decode(5, table([])) }?.contains("0 regions") == true)
        let nine = (0..<9).map { (UInt64($0) << 20, UInt64(4096), UInt64($0) << 20, UInt64(0)) }
        #expect(malformed { _ = try decode(5, table(nine), fds: Array(repeating: 3, count: 9)) }?.contains("9 regions") == true)
        #expect(malformed { _ = try decode(5, Array(table([(0, 4096, 0, 0)]).dropLast()), fds: [3]) } != nil)
    }
}
