import Hashing

/// A content digest, `<algorithm>:<hex>`. obd writes and checks SHA-256 only (OCI's
/// registered digest for content obd handles); `Digest(parsing:)` accepts exactly
/// `sha256:` and 64 lowercase hex digits. `description` is the string form.
public struct Digest: Hashable, Sendable, CustomStringConvertible {
    public let algorithm: String
    public let hex: String

    /// Parses `sha256:<64 lowercase hex>`.
    public init(parsing text: String) throws(DigestError) {
        guard text.hasPrefix("sha256:") else { throw DigestError.unsupported(text) }
        let hex = text.utf8.dropFirst(7)
        guard hex.count == 64, hex.allSatisfy(Self.isLowerHex) else { throw DigestError.malformed(text) }
        algorithm = "sha256"
        self.hex = String(text.dropFirst(7))
    }

    /// The SHA-256 digest whose lowercase hex is `sha256Hex` (the output of a hasher).
    public init(sha256Hex: String) {
        precondition(sha256Hex.utf8.count == 64 && sha256Hex.utf8.allSatisfy(Self.isLowerHex), "not SHA-256 hex")
        algorithm = "sha256"
        hex = sha256Hex
    }

    /// The SHA-256 digest of `bytes`.
    public static func sha256(of bytes: [UInt8]) -> Digest { Digest(sha256Hex: SHA256Hex.of(bytes)) }

    public var description: String { algorithm + ":" + hex }

    /// Whether `text` is a valid `sha256:` digest.
    public static func isSHA256(_ text: String) -> Bool { (try? Digest(parsing: text)) != nil }

    /// Whether `text` follows the OCI digest grammar closely enough to be a reference's
    /// digest: `<algorithm>:<lowercase hex>`, with 64 digits for `sha256` (other
    /// algorithms are accepted in references, and then not checked).
    public static func isWellFormed(_ text: String) -> Bool {
        if text.hasPrefix("sha256:") { return isSHA256(text) }
        guard let colon = text.firstIndex(of: ":") else { return false }
        let alg = text[..<colon], hex = text.utf8[text.utf8.index(after: colon)...]
        return !alg.isEmpty && !hex.isEmpty && hex.allSatisfy(isLowerHex)
    }

    /// Whether `bytes` hash to this digest (false for an algorithm obd does not compute).
    public func matches(_ bytes: [UInt8]) -> Bool { algorithm == "sha256" && SHA256Hex.of(bytes) == hex }

    private static func isLowerHex(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }
}

/// Why a string is not a digest obd accepts.
public enum DigestError: Error, Equatable, CustomStringConvertible {
    /// Not `sha256:` (another algorithm, or no algorithm at all).
    case unsupported(String)
    /// `sha256:` without exactly 64 lowercase hex digits.
    case malformed(String)

    public var description: String {
        switch self {
        case let .unsupported(d): return "digest '\(d)' is not a sha256: digest"
        case let .malformed(d): return "digest '\(d)' is not sha256: with 64 lowercase hex digits"
        }
    }
}
