import BlockIO
import Glibc
import Testing
import TestSupport
@testable import Trace

@Suite("Trace file format")
struct TraceFormatTests {
    static let sample: [TraceRecord] = [
        TraceRecord(layerIndex: 0, count: 4096, offset: 0),
        TraceRecord(layerIndex: 1, count: 65536, offset: 1 << 33),
        TraceRecord(layerIndex: 0, count: 512, offset: 123_456_512),
        TraceRecord(layerIndex: 7, count: 1 << 20, offset: Int64.max - (1 << 20)),
    ]

    /// The error `body` throws, as a `TraceError` (nil if it throws none or another kind).
    static func error(_ body: () throws -> Void) -> TraceError? {
        do { try body(); return nil } catch let e as TraceError { return e } catch { return nil }
    }

    @Test("encode, decode and the file round trip keep every record; an empty trace is 24 bytes")
    func roundTrip() throws {
        let bytes = TraceFormat.encode(Self.sample)
        #expect(bytes.count == 24 + 24 * Self.sample.count)
        #expect(try TraceFormat.decode(bytes, path: "t") == Self.sample)
        #expect(TraceFormat.encode([]).count == 24)
        #expect(try TraceFormat.decode(TraceFormat.encode([]), path: "t").isEmpty)
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        try TraceFormat.write(Self.sample, to: dir.file("trace"))
        #expect(try TraceFormat.read(path: dir.file("trace")) == Self.sample)
        #expect(access(dir.file("trace.tmp"), F_OK) != 0)
        #expect(try TraceFormat.isTrace(LocalFile(path: dir.file("trace"))))
    }

    @Test("the header and records lie byte for byte where the specification says, checked by an independent reader")
    func layout() {
        let bytes = TraceFormat.encode(Self.sample)
        let h = IndependentTrace.header(bytes)
        #expect(h.magic == 0xC2EF_1820)
        #expect(Array(bytes[0..<4]) == [0x20, 0x18, 0xEF, 0xC2], "magic is little-endian at offset 0")
        #expect(h.pad1 == [0, 0, 0, 0] && h.pad2 == [0, 0, 0, 0], "padding is written as zeros")
        #expect(h.dataSize == UInt64(24 * Self.sample.count))
        #expect(h.checksum == IndependentTrace.crc32cRaw(bytes[24...]), "raw CRC-32C from 0 over the record bytes")
        // Chained per record, as overlaybd computes it, gives the same value.
        var chained: UInt32 = 0
        for i in 0..<Self.sample.count { chained = IndependentTrace.crc32cRaw(bytes[(24 + 24 * i)..<(48 + 24 * i)], seed: chained) }
        #expect(chained == h.checksum)
        let recs = IndependentTrace.records(bytes)
        #expect(recs.count == Self.sample.count)
        for (r, s) in zip(recs, Self.sample) {
            #expect(r.op == UInt8(ascii: "R") && r.pad == [0, 0, 0])
            #expect(r.layer == s.layerIndex && r.count == s.count && r.offset == s.offset)
        }
        // The CRC-32C check value of "123456789" (inverted form) pins the independent CRC.
        let check = ~IndependentTrace.crc32cRaw(ArraySlice("123456789".utf8), seed: ~0)
        #expect(check == 0xE306_9283)
    }

    @Test("a trace written by the independent writer, with non-zero padding, reads back")
    func readsIndependentWriter() throws {
        let recs: [(layer: UInt32, count: UInt64, offset: Int64)] = [(0, 4096, 8192), (2, 131_072, 1 << 40), (1, 1, 0)]
        let bytes = IndependentTrace.write(recs, padding: 0xA5)
        let parsed = try TraceFormat.decode(bytes, path: "indep")
        #expect(parsed.map { [UInt64($0.layerIndex), $0.count, UInt64($0.offset)] } == recs.map { [UInt64($0.layer), $0.count, UInt64($0.offset)] })
        #expect(TraceFormat.hasMagic(bytes))
    }

    @Test("hostile traces are refused with the matching error, naming the file and the offending value")
    func hostile() {
        let good = TraceFormat.encode(Self.sample)
        var bad = good
        bad[0] ^= 0xFF
        #expect(Self.error { _ = try TraceFormat.decode(bad, path: "p") } == .badMagic(path: "p", found: 0xC2EF_18DF))
        // Wrong size: one byte missing, one extra, and a data size far beyond the file.
        #expect(Self.error { _ = try TraceFormat.decode(Array(good.dropLast()), path: "p") }
                == .sizeMismatch(path: "p", fileSize: UInt64(good.count - 1), dataSize: 96))
        #expect(Self.error { _ = try TraceFormat.decode(good + [0], path: "p") }
                == .sizeMismatch(path: "p", fileSize: UInt64(good.count + 1), dataSize: 96))
        var huge = good
        IndependentTrace.put(UInt64.max, into: &huge, at: 8)
        #expect(Self.error { _ = try TraceFormat.decode(huge, path: "p") } == .sizeMismatch(path: "p", fileSize: UInt64(good.count), dataSize: .max))
        // Data size matching the file but not a multiple of 24.
        var odd = good + [0]
        IndependentTrace.put(UInt64(97), into: &odd, at: 8)
        #expect(Self.error { _ = try TraceFormat.decode(odd, path: "p") } == .misalignedDataSize(path: "p", dataSize: 97))
        // Shorter than a header.
        #expect(Self.error { _ = try TraceFormat.decode(Array(good.prefix(23)), path: "p") } == .tooShort(path: "p", size: 23))
        #expect(Self.error { _ = try TraceFormat.decode([], path: "p") } == .tooShort(path: "p", size: 0))
        // A flipped bit in a record, and in the padding the checksum covers.
        for at in [24 + 9, 24 + 2] {
            var flipped = good
            flipped[at] ^= 0x01
            let computed = IndependentTrace.crc32cRaw(flipped[24...])
            #expect(Self.error { _ = try TraceFormat.decode(flipped, path: "p") }
                    == .checksumMismatch(path: "p", stored: IndependentTrace.header(good).checksum, computed: computed))
        }
        // Absurd counts, negative offsets, overflowing ends, unknown operations: each
        // with a valid checksum, so the record check itself refuses them.
        let absurd = IndependentTrace.write([(0, 4096, 0), (0, 1 << 40, 0)])
        #expect(Self.error { _ = try TraceFormat.decode(absurd, path: "p") } == .absurdCount(path: "p", offset: 48, count: 1 << 40))
        let maxCount = IndependentTrace.write([(0, UInt64.max, 0)])
        #expect(Self.error { _ = try TraceFormat.decode(maxCount, path: "p") } == .absurdCount(path: "p", offset: 24, count: .max))
        let negative = IndependentTrace.write([(0, 4096, -4096)])
        #expect(Self.error { _ = try TraceFormat.decode(negative, path: "p") } == .recordOutOfRange(path: "p", offset: 24, recordOffset: -4096, count: 4096))
        let overflow = IndependentTrace.write([(0, 4096, Int64.max - 100)])
        #expect(Self.error { _ = try TraceFormat.decode(overflow, path: "p") } == .recordOutOfRange(path: "p", offset: 24, recordOffset: Int64.max - 100, count: 4096))
        var op = IndependentTrace.write([(0, 4096, 0), (0, 4096, 4096)])
        op[48] = UInt8(ascii: "X")
        IndependentTrace.put(IndependentTrace.crc32cRaw(op[24...]), into: &op, at: 16)
        #expect(Self.error { _ = try TraceFormat.decode(op, path: "p") } == .badOperation(path: "p", offset: 48, op: UInt8(ascii: "X")))
        // More records than the limit: refused from the header alone.
        var header = Array(good.prefix(24))
        let tooMany = (TraceFormat.maxRecords + 1) * 24
        IndependentTrace.put(tooMany, into: &header, at: 8)
        #expect(Self.error { _ = try TraceFormat.checkHeader(header, fileSize: 24 + tooMany, path: "p") }
                == .tooManyRecords(path: "p", records: TraceFormat.maxRecords + 1))
    }

    @Test("files: a huge claimed size is refused before reading; a missing file is an open error; a priority list has no magic")
    func files() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var huge = TraceFormat.encode(Self.sample)
        IndependentTrace.put(UInt64(1) << 40, into: &huge, at: 8)
        try LocalFile(path: dir.file("huge"), mode: .createTruncate).writeBytes(huge, at: 0)
        #expect(Self.error { _ = try TraceFormat.read(path: dir.file("huge")) }
                == .sizeMismatch(path: dir.file("huge"), fileSize: UInt64(huge.count), dataSize: 1 << 40))
        #expect(Self.error { _ = try TraceFormat.read(path: dir.file("missing")) } == .io(path: dir.file("missing"), operation: "open", errno: ENOENT))
        let list = Array("/usr/bin/\n/etc/passwd\n/var/lib/dpkg/\n".utf8)
        try LocalFile(path: dir.file("list"), mode: .createTruncate).writeBytes(list, at: 0)
        #expect(try !TraceFormat.isTrace(LocalFile(path: dir.file("list"))))
        #expect(!TraceFormat.hasMagic([0x20, 0x18, 0xEF]))
        #expect(Self.error { _ = try TraceFormat.read(path: dir.file("list")) } == .badMagic(path: dir.file("list"), found: 0x7273_752F))
        // Writing where no file can be created reports the temporary path.
        #expect(Self.error { try TraceFormat.write([], to: dir.file("no/such/dir/trace")) }
                == .io(path: dir.file("no/such/dir/trace") + ".tmp", operation: "create", errno: ENOENT))
    }
}
