import BlockIO
import Testing
import TestSupport
import ZFile

/// Corrupt and hostile ZFiles: clear errors, never a crash, never wrong bytes where
/// the format carries integrity data.
@Suite("ZFile with bad input")
struct ZFileHostileTests {
    static let data = mixedData(200_000, seed: 21)

    static func good(verify: Bool = true, rewrite: Bool = false) throws -> [UInt8] {
        try compress(data, ZFileOptions(verify: verify, overwriteHeader: rewrite)).bytes
    }

    /// Opens and reads everything; returns the bytes, or nil if an error was thrown.
    static func readAll(_ bytes: [UInt8]) -> [UInt8]? {
        do {
            let r = try ZFileReader(source: MemoryFile(bytes: bytes, writable: false))
            guard r.size < 1 << 30 else { return nil }
            return try r.readBytes(at: 0, count: Int(r.size))
        } catch is ZFileError {
            return nil
        } catch is BlockIOError {
            return nil
        } catch {
            Issue.record("unexpected error type: \(error)")
            return nil
        }
    }

    @Test("every truncation is an error, never a crash")
    func truncations() throws {
        let full = try Self.good()
        var cut = 0
        while cut < full.count - 1 {
            #expect(Self.readAll(Array(full[0..<cut])) == nil, "truncated to \(cut) bytes")
            cut += cut < 2048 ? 1 : 997
        }
    }

    @Test("every bit flip in the header or trailer is detected (digest flag set), or harmless", arguments: [false, true])
    func recordFlips(rewrite: Bool) throws {
        let full = try Self.good(rewrite: rewrite)
        let regions = [0..<96, (full.count - 512)..<(full.count - 416)]
        for region in regions {
            for byte in region {
                for bit in 0..<8 {
                    var b = full
                    b[byte] ^= UInt8(1 << bit)
                    if let out = Self.readAll(b) {
                        #expect(out == Self.data, "flip at byte \(byte) bit \(bit) gave wrong bytes")
                    }
                }
            }
        }
    }

    @Test("a flipped bit in the jump table fails the open (index CRC)")
    func indexFlips() throws {
        let full = try Self.good()
        let r = try ZFileReader(source: MemoryFile(bytes: full))
        let start = Int(r.record.indexOffset)
        for byte in stride(from: start, to: start + Int(r.record.indexSize) * 4, by: 3) {
            var b = full
            b[byte] ^= 0x10
            #expect(Self.readAll(b) == nil)
        }
    }

    @Test("a flipped bit in a block fails reads of that block (CRC) and the file is not modified")
    func blockFlips() throws {
        let full = try Self.good()
        let r0 = try ZFileReader(source: MemoryFile(bytes: full))
        var g = SplitMix64(seed: 4)
        for _ in 0..<200 {
            let block = Int(g.next() % UInt64(r0.table.blockCount))
            let lo = Int(r0.table.offset(block)), hi = Int(r0.table.offset(block + 1))
            let byte = lo + Int(g.next() % UInt64(hi - lo))
            var b = full
            b[byte] ^= UInt8(1 << (g.next() % 8))
            let file = MemoryFile(bytes: b, writable: false)
            let r = try ZFileReader(source: file)
            let bs = UInt64(r.blockSize)
            #expect(throws: ZFileError.self) { _ = try r.readBytes(at: UInt64(block) * bs, count: 1) }
            // Neighbouring blocks still read correctly.
            if block > 0 {
                let prev = try r.readBytes(at: UInt64(block - 1) * bs, count: Int(bs))
                #expect(prev[...] == Self.data[Int(UInt64(block - 1) * bs)..<Int(UInt64(block) * bs)])
            }
            #expect(file.bytes == b)
        }
    }

    @Test("without CRCs, corrupt blocks give an error or bytes, never a crash")
    func noCRCFlips() throws {
        let full = try Self.good(verify: false)
        var g = SplitMix64(seed: 6)
        for _ in 0..<300 {
            var b = full
            let byte = 512 + Int(g.next() % UInt64(full.count - 1024))
            b[byte] = UInt8(truncatingIfNeeded: g.next())
            _ = Self.readAll(b)
        }
    }

    @Test("random garbage behind a valid magic never crashes")
    func garbage() throws {
        var g = SplitMix64(seed: 7)
        let header = Array(try Self.good()[0..<512])
        for i in 0..<500 {
            var b = header + g.bytes(Int(g.next() % 5000))
            if i % 2 == 0 { b += Array(header) }
            // Sometimes plausible fields.
            if i % 3 == 0, b.count >= 1024 {
                let t = b.count - 512
                b.replaceSubrange(t..<(t + 96), with: header[0..<96])
                b[t + 32] = 0x06
            }
            _ = Self.readAll(b)
        }
    }

    @Test("not a ZFile: a clear error")
    func notZFile() throws {
        #expect(throws: ZFileError.notZFile(name: "<memory>")) {
            try ZFileReader(source: MemoryFile(bytes: [UInt8](repeating: 7, count: 4096)))
        }
        #expect(!(try ZFileReader.isZFile(MemoryFile(bytes: [1, 2, 3]))))
    }

    @Test("hostile tar wrappers: clear errors")
    func hostileTar() throws {
        var pax = TarWrapper.prefix(payloadSize: 1 << 40)
        pax += [UInt8](repeating: 0, count: 1024)
        #expect(throws: ZFileError.self) { try TarWrapper.unwrap(MemoryFile(bytes: pax)) }
        var g = SplitMix64(seed: 9)
        let good = TarWrapper.prefix(payloadSize: 100) + [UInt8](repeating: 1, count: 100) + TarWrapper.suffix(payloadSize: 100)
        for _ in 0..<2000 {
            var b = good
            b[Int(g.next() % 1536)] = UInt8(truncatingIfNeeded: g.next())
            do {
                // A header that still parses must give a payload inside the file.
                if let payload = try TarWrapper.unwrap(MemoryFile(bytes: b)) { #expect(payload.size <= UInt64(b.count)) }
            } catch is ZFileError {
            } catch {
                Issue.record("unexpected error \(type(of: error)): \(error)")
            }
        }
    }
}
