import BlockIO
import Crypto

/// SHA-256 digests as the lowercase hex that OCI digests use.
public enum SHA256Hex {
    public static func of(_ bytes: [UInt8]) -> String { hex(SHA256.hash(data: bytes)) }

    /// Lowercase hex of any byte sequence (a finished digest).
    public static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// An incremental SHA-256 whose result is the OCI lowercase hex.
public struct SHA256Stream {
    private var hasher = SHA256()
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }
    public func hex() -> String { SHA256Hex.hex(hasher.finalize()) }
}

extension SHA256Stream {
    /// `sha256:<hex>` of a whole file, read in 4 MiB pieces.
    public static func digest(of file: any BlockFile) throws -> String {
        var h = SHA256Stream()
        try file.forEachChunk { piece, _ in h.update(piece) }
        return "sha256:" + h.hex()
    }
}
