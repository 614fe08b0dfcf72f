import BlockIO
import LSMT

/// A fixed 1 MiB target for the warp-layer open (tag-1 ranges must stay inside it).
let warpTarget = MemoryFile(bytes: (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }, name: "target", writable: false)

/// libFuzzer entry: the bytes are a read-only LSMT layer; open it, stack it, read it.
/// The same bytes are also opened as a TurboOCI warp layer over a 1 MiB target, stacked
/// through its identity view and read: every tag-1 read must stay inside the target.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let file = MemoryFile(bytes: Array(UnsafeBufferPointer(start: data, count: size)), writable: false)
    if let warp = try? WarpLayer(file: file, target: warpTarget), let stack = try? LayerStack(lowers: [ReadOnlyLayer(warp: warp)]) {
        var buf = [UInt8](repeating: 0, count: 65536)
        for s in warp.index.segments.prefix(16) {
            precondition(s.tag <= 1 && (s.tag == 0 || s.zeroed || s.mend * 512 <= warpTarget.size), "warp entry \(s) leaves the target")
            _ = try? buf.withUnsafeMutableBytes { try stack.read(into: $0, at: s.offset &* 512) }
        }
    }
    guard let layer = try? ReadOnlyLayer(file: file), let stack = try? LayerStack(lowers: [layer, layer]) else { return 0 }
    var buf = [UInt8](repeating: 0, count: 65536)
    for s in layer.segments.prefix(16) {
        _ = try? buf.withUnsafeMutableBytes { try stack.read(into: $0, at: s.offset &* 512) }
    }
    _ = stack.flattenedIndex()
    return 0
}
