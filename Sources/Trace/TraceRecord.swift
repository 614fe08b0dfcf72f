/// One access of a trace: `count` bytes read at `offset` of lower `layerIndex`'s
/// decompressed layer file (the view above ZFile, below LSMT; 0 is the bottom lower in
/// config order).
public struct TraceRecord: Sendable, Hashable, CustomStringConvertible {
    /// overlaybd's operation byte for a read (`'R'`).
    public static let read: UInt8 = 0x52
    /// overlaybd's operation byte for a write (`'W'`): defined by the format, never recorded.
    public static let write: UInt8 = 0x57

    /// The operation byte: `read` or `write`.
    public var op: UInt8
    /// The lower the access went to (0 = bottom lower in config order).
    public var layerIndex: UInt32
    /// Bytes accessed.
    public var count: UInt64
    /// Byte offset in the decompressed layer file.
    public var offset: Int64

    public init(op: UInt8 = TraceRecord.read, layerIndex: UInt32, count: UInt64, offset: Int64) {
        self.op = op
        self.layerIndex = layerIndex
        self.count = count
        self.offset = offset
    }

    public var description: String {
        "\(op == TraceRecord.read ? "R" : op == TraceRecord.write ? "W" : "?") layer \(layerIndex) [\(offset), +\(count))"
    }
}
