/// The keys of a JSON object in document order. `JSONDecoder` hands out dictionaries,
/// which forget order; overlaybd matches credentials by the *first* key in the file, so
/// the order has to be read from the bytes themselves.
enum JSONKeyOrder {
    /// Keys of the object found by following `path` (object keys) from the top level;
    /// empty if the bytes are not JSON of that shape.
    static func keys(_ bytes: [UInt8], path: [String]) -> [String] {
        var s = Scanner(bytes: bytes)
        var remaining = path[...]
        while true {
            guard let keys = s.objectKeys(stopAt: remaining.first) else { return [] }
            guard remaining.first != nil else { return keys }
            remaining = remaining.dropFirst()
        }
    }

    struct Scanner {
        let bytes: [UInt8]
        var i = 0

        mutating func skipSpace() { while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 } }

        /// Reads an object's keys; with `stopAt`, stops right before that key's value.
        mutating func objectKeys(stopAt: String?) -> [String]? {
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { return nil }
            i += 1
            var keys: [String] = []
            while true {
                skipSpace()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return stopAt == nil ? keys : nil }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                guard let key = string() else { return nil }
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                if let stopAt, key == stopAt { return [] }
                keys.append(key)
                guard skipValue() else { return nil }
            }
        }

        mutating func string() -> String? {
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            var out: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                i += 1
                if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                if b == UInt8(ascii: "\\") {
                    guard i < bytes.count else { return nil }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "u"):
                        guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16) else { return nil }
                        i += 4
                        out += Array(String(Character(Unicode.Scalar(v) ?? "?")).utf8)
                    default: out.append(e)
                    }
                } else {
                    out.append(b)
                }
            }
            return nil
        }

        mutating func skipValue() -> Bool {
            skipSpace()
            guard i < bytes.count else { return false }
            switch bytes[i] {
            case UInt8(ascii: "\""): return string() != nil
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while i < bytes.count {
                    let b = bytes[i]
                    if b == UInt8(ascii: "\"") { guard string() != nil else { return false }; continue }
                    i += 1
                    if b == UInt8(ascii: "{") || b == UInt8(ascii: "[") { depth += 1 }
                    if b == UInt8(ascii: "}") || b == UInt8(ascii: "]") { depth -= 1; if depth == 0 { return true } }
                }
                return false
            default:
                while i < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]")].contains(bytes[i]) { i += 1 }
                return true
            }
        }
    }
}
