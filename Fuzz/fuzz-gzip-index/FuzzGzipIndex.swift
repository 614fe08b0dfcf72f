import BlockIO
import CZlib
import Gzip

/// A small gzip blob (two members) the fuzzed indexes are opened against, made once.
let plain: [UInt8] = {
    var p = [UInt8]()
    var x: UInt32 = 1
    for i in 0..<300_000 {
        x = x &* 1_103_515_245 &+ 12345
        p.append(i % 5000 < 2500 ? UInt8(truncatingIfNeeded: x >> 24) : UInt8(truncatingIfNeeded: i / 97))
    }
    return p + p.reversed()
}()
let blob = MemoryFile(bytes: gzipMember(Array(plain[0..<300_000])) + gzipMember(Array(plain[300_000...])), name: "blob.gz", writable: false)

/// A valid index of the blob (span 64 KiB): inputs without the magic are edits of it.
let validIndex: [UInt8] = try! GzipIndexWriter.build(gzip: blob, options: .init(span: 65536))

/// One gzip member of `data` (zlib, level 6).
func gzipMember(_ data: [UInt8]) -> [UInt8] {
    var s = z_stream()
    precondition(deflateInit2_(&s, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK)
    defer { deflateEnd(&s) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&s, uLong(data.count))) + 64)
    let n = data.withUnsafeBufferPointer { i in
        out.withUnsafeMutableBufferPointer { o in
            s.next_in = UnsafeMutablePointer(mutating: i.baseAddress)
            s.avail_in = uInt(data.count)
            s.next_out = o.baseAddress
            s.avail_out = uInt(o.count)
            precondition(deflate(&s, Z_FINISH) == Z_STREAM_END)
            return o.count - Int(s.avail_out)
        }
    }
    return Array(out[0..<n])
}

/// libFuzzer entry: the bytes are a gzip index file, or (without the magic) a list of
/// 3-byte edits (u16 offset, xor value) applied to a valid index of the blob. Parsing must either fail with a
/// GzipError or give an index whose invariants hold; opened against the blob, every read
/// either fails with an error or returns exactly the blob's uncompressed bytes. Nothing
/// may crash or hang. Seeds: valid indexes of the blob (tools/fuzz.sh).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    var bytes = input
    if !input.starts(with: Array("ddgzidx".utf8)) {
        bytes = validIndex
        var k = 0
        while k + 3 <= input.count {
            let at = (Int(input[k]) | Int(input[k + 1]) << 8) % bytes.count
            bytes[at] ^= input[k + 2]
            k += 3
        }
    }
    check(bytes)
    // Random bytes rarely carry a valid header CRC: also try them with the CRC fixed up.
    if bytes.count >= 333 {
        let crc = CRC32C.raw(0, bytes[0..<329])
        for k in 0..<4 { bytes[329 + k] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(k))) }
        check(bytes)
    }
    return 0
}

func check(_ bytes: [UInt8]) {
    let file = MemoryFile(bytes: bytes, name: "fuzz", writable: false)
    let index: GzipIndex
    do {
        index = try GzipIndex(file: file)
    } catch is GzipError {
        return
    } catch {
        preconditionFailure("not a GzipError: \(error)")
    }
    precondition(index.points.first?.uncompressedOffset == 0, "first point not at 0")
    for (a, b) in zip(index.points, index.points.dropFirst()) {
        precondition(a.uncompressedOffset <= b.uncompressedOffset && a.compressedOffset <= b.compressedOffset, "points out of order")
    }
    guard let g = try? GzipFile(blob: blob, index: index, options: .init(cacheBytes: 1 << 20)) else { return }
    var buf = [UInt8](repeating: 0, count: 8192)
    for off in [0, g.size / 3, g.size / 2, g.size &- 100] where off < g.size {
        _ = try? buf.withUnsafeMutableBytes { try g.read(into: $0, at: off) }
    }
    // Once every span is verified, reads must give exactly the blob's bytes.
    guard (try? g.verifyAll()) != nil else { return }
    precondition(g.size == UInt64(plain.count), "verified index with size \(g.size)")
    for off in [0, g.size / 3, g.size / 2, g.size &- 100] where off < g.size {
        let n = (try? buf.withUnsafeMutableBytes { try g.read(into: $0, at: off) }) ?? -1
        precondition(n >= 0 && buf[0..<n].elementsEqual(plain[Int(off)..<Int(off) + n]), "wrong bytes at \(off) from a verified index")
    }
}
