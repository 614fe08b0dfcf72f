import BlockIO

/// A lower's decompressed layer file (above ZFile, below LSMT) that tells `recorder`
/// about every successful full read: offset, count and the lower's index. Reads are
/// passed through unchanged; when the recorder is idle the cost is one atomic load.
///
/// It exposes no memory mapping on purpose, so that every read comes through `read`.
public final class TracingFile: BlockFile, Sendable {
    public let inner: any BlockFile
    public let layerIndex: UInt32
    public let recorder: TraceRecorder

    public init(_ inner: any BlockFile, layerIndex: UInt32, recorder: TraceRecorder) {
        self.inner = inner
        self.layerIndex = layerIndex
        self.recorder = recorder
    }

    public var size: UInt64 { inner.size }
    public var name: String { inner.name }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let n = try inner.read(into: buffer, at: offset)
        if n == buffer.count && n > 0 { recorder.record(layerIndex: layerIndex, offset: offset, count: n) }
        return n
    }
}
