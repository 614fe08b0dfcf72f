import BlockIO

/// The single-file tar wrapper overlaybd puts around a layer blob (`-t`):
/// a PAX header `overlaybd.pax` carrying `size=`, a ustar header `overlaybd.commit`,
/// the payload at byte 1536, padding and two zero blocks.
public enum TarWrapper {
    public static let blockSize = 512
    /// Offset of the payload in a wrapper that obd writes.
    public static let payloadOffset: UInt64 = 1536
    /// Largest PAX data obd reads while looking for the payload.
    static let maxPaxSize = 1 << 20

    /// If `file` is a tar archive, returns its first regular file's payload as a file;
    /// nil if `file` is not a tar.
    public static func unwrap(_ file: any BlockFile) throws -> SliceFile? {
        let fileSize = file.size
        guard fileSize >= UInt64(blockSize) else { return nil }
        var block = [UInt8](repeating: 0, count: blockSize)
        try block.withUnsafeMutableBytes { try file.readExactly(into: $0, at: 0) }
        guard isTarHeader(block) else { return nil }
        var pos: UInt64 = 0
        var paxSize: UInt64?
        while true {
            guard pos + UInt64(blockSize) <= fileSize else {
                throw ZFileError.corrupt(name: file.name, detail: "tar wrapper ends before its file entry")
            }
            try block.withUnsafeMutableBytes { try file.readExactly(into: $0, at: pos) }
            guard isTarHeader(block) else {
                throw ZFileError.corrupt(name: file.name, detail: "bad tar header at offset \(pos)")
            }
            guard let size = parseNumber(block[124..<136]) else {
                throw ZFileError.corrupt(name: file.name, detail: "bad tar size field at offset \(pos)")
            }
            let type = block[156]
            let dataStart = pos + UInt64(blockSize)
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                guard size <= UInt64(maxPaxSize), dataStart + size <= fileSize else {
                    throw ZFileError.corrupt(name: file.name, detail: "PAX header of \(size) bytes at offset \(pos) does not fit")
                }
                if type == UInt8(ascii: "x") {
                    let data = try file.readBytes(at: dataStart, count: Int(size))
                    if let s = paxRecord(data, key: "size") {
                        guard let v = UInt64(s) else {
                            throw ZFileError.corrupt(name: file.name, detail: "bad PAX size record \"\(s)\"")
                        }
                        paxSize = v
                    }
                }
                pos = dataStart + roundUp(size)
            case UInt8(ascii: "0"), 0:
                let payloadSize = paxSize ?? size
                guard payloadSize <= fileSize, dataStart <= fileSize - payloadSize else {
                    throw ZFileError.corrupt(name: file.name, detail: "tar payload of \(payloadSize) bytes at offset \(dataStart) exceeds the file (\(fileSize) bytes)")
                }
                return try SliceFile(parent: file, base: dataStart, length: payloadSize)
            default:
                throw ZFileError.unsupported(name: file.name, detail: "tar wrapper entry of type '\(Character(Unicode.Scalar(type)))' (expected one regular file)")
            }
        }
    }

    /// The 1536 bytes that precede the payload, for a payload of `payloadSize` bytes.
    public static func prefix(payloadSize: UInt64, mode: UInt32 = 0o100644) -> [UInt8] {
        let record = paxSizeRecord(payloadSize)
        var pax = [UInt8](repeating: 0, count: blockSize)
        put(&pax, 0, Array("overlaybd.pax".utf8))
        put(&pax, 124, Array((spacePadded(octal: UInt64(record.count), width: 11) + " ").utf8))
        pax[156] = UInt8(ascii: "x")
        put(&pax, 257, Array("ustar\0".utf8))
        put(&pax, 263, Array("00".utf8))
        setChecksum(&pax)

        var data = [UInt8](repeating: 0, count: blockSize)
        put(&data, 0, record)

        var file = [UInt8](repeating: 0, count: blockSize)
        put(&file, 0, Array("overlaybd.commit".utf8))
        put(&file, 100, Array((spacePadded(octal: UInt64(mode), width: 6) + " \0").utf8))
        put(&file, 108, Array((spacePadded(octal: 0, width: 6) + " \0").utf8))
        put(&file, 116, Array((spacePadded(octal: 0, width: 6) + " \0").utf8))
        put(&file, 124, Array((spacePadded(octal: 0, width: 11) + " ").utf8))
        put(&file, 136, Array((spacePadded(octal: 0, width: 11) + " ").utf8))
        file[156] = UInt8(ascii: "0")
        put(&file, 257, Array("ustar\0".utf8))
        put(&file, 263, Array("00".utf8))
        put(&file, 265, Array("root".utf8))
        put(&file, 297, Array("root".utf8))
        setChecksum(&file)
        return pax + data + file
    }

    /// The bytes after the payload: zero padding to 512 plus two zero blocks.
    public static func suffix(payloadSize: UInt64) -> [UInt8] {
        [UInt8](repeating: 0, count: Int(roundUp(payloadSize) - payloadSize) + 2 * blockSize)
    }

    static func paxSizeRecord(_ size: UInt64) -> [UInt8] {
        let body = " size=\(size)\n"
        var len = body.utf8.count + 1
        while String(len).utf8.count + body.utf8.count != len { len += 1 }
        return Array("\(len)\(body)".utf8)
    }

    static func roundUp(_ n: UInt64) -> UInt64 { (n + 511) & ~511 }

    static func put(_ b: inout [UInt8], _ at: Int, _ bytes: [UInt8]) {
        b.replaceSubrange(at..<(at + bytes.count), with: bytes)
    }

    static func spacePadded(octal v: UInt64, width: Int) -> String {
        let s = String(v, radix: 8)
        return String(repeating: " ", count: max(0, width - s.count)) + s
    }

    static func setChecksum(_ b: inout [UInt8]) {
        for i in 148..<156 { b[i] = UInt8(ascii: " ") }
        let sum = b.reduce(0) { $0 + UInt64($1) }
        put(&b, 148, Array((spacePadded(octal: sum, width: 6) + " \0").utf8))
    }

    /// ustar magic, version "00" and a valid checksum (unsigned or signed sum).
    static func isTarHeader(_ b: [UInt8]) -> Bool {
        guard b.count >= blockSize, b[257..<263].elementsEqual(Array("ustar\0".utf8)),
              b[263..<265].elementsEqual(Array("00".utf8)),
              let stored = parseNumber(b[148..<156]) else { return false }
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for (i, x) in b.prefix(blockSize).enumerated() {
            let v = (148..<156).contains(i) ? UInt8(ascii: " ") : x
            unsigned += Int64(v)
            signed += Int64(Int8(bitPattern: v))
        }
        return Int64(stored) == unsigned || Int64(stored) == signed
    }

    /// Parses a tar numeric field: octal (space/NUL padded) or GNU base-256.
    static func parseNumber(_ field: ArraySlice<UInt8>) -> UInt64? {
        guard let first = field.first else { return nil }
        if first & 0x80 != 0 {
            var v: UInt64 = UInt64(first & 0x7F)
            for x in field.dropFirst() {
                guard v >> 56 == 0 else { return nil }
                v = v << 8 | UInt64(x)
            }
            return v
        }
        var v: UInt64 = 0
        var seen = false
        for x in field {
            if x == 0 || x == UInt8(ascii: " ") { if seen { break } else { continue } }
            guard x >= UInt8(ascii: "0"), x <= UInt8(ascii: "7"), v >> 60 == 0 else { return nil }
            v = v * 8 + UInt64(x - UInt8(ascii: "0"))
            seen = true
        }
        return v
    }

    /// The value of `key` in PAX extended-header data, if present.
    static func paxRecord(_ data: [UInt8], key: String) -> String? {
        var i = 0
        var result: String?
        while i < data.count {
            var j = i
            var len = 0
            while j < data.count, data[j] >= UInt8(ascii: "0"), data[j] <= UInt8(ascii: "9"), len < 1 << 24 {
                len = len * 10 + Int(data[j] - UInt8(ascii: "0"))
                j += 1
            }
            guard len > 0, j < data.count, data[j] == UInt8(ascii: " "), i + len <= data.count,
                  data[i + len - 1] == UInt8(ascii: "\n") else { break }
            let rec = data[(j + 1)..<(i + len - 1)]
            if let eq = rec.firstIndex(of: UInt8(ascii: "=")) {
                let k = String(decoding: rec[rec.startIndex..<eq], as: UTF8.self)
                if k == key { result = String(decoding: rec[(eq + 1)...], as: UTF8.self) }
            }
            i += len
        }
        return result
    }
}

extension TarWrapper {
    /// Writes the wrapper around a payload already written at `payloadOffset` in `output`.
    public static func wrap(output: any BlockFile, payloadSize: UInt64, mode: UInt32 = 0o100644) throws {
        try output.writeBytes(prefix(payloadSize: payloadSize, mode: mode), at: 0)
        try output.writeBytes(suffix(payloadSize: payloadSize), at: payloadOffset + payloadSize)
    }
}
