/// A layer UUID: 16 bytes, stored in LSMT headers as 36 uppercase hex characters
/// with dashes plus a NUL (37 bytes).
public struct LayerUUID: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    public static let null = LayerUUID(bytes: [UInt8](repeating: 0, count: 16))

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        self.bytes = bytes
    }

    /// Parses `8-4-4-4-12` hex (either case). Nil if malformed.
    public init?(_ text: some StringProtocol) {
        let chars = Array(text.utf8)
        guard chars.count == 36 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var i = 0
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard chars[i] == UInt8(ascii: "-") else { return nil }
                i += 1
                continue
            }
            guard let hi = LayerUUID.hex(chars[i]), let lo = LayerUUID.hex(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        bytes = out
    }

    /// A random version-4 UUID.
    public static func random() -> LayerUUID {
        var g = SystemRandomNumberGenerator()
        var b = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        return LayerUUID(bytes: b)
    }

    public var isNull: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Uppercase `8-4-4-4-12` text.
    public var description: String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
