import BlockIO
import LSMT

/// libFuzzer entry: the bytes are a read-only LSMT layer; open it, stack it, read it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let file = MemoryFile(bytes: Array(UnsafeBufferPointer(start: data, count: size)), writable: false)
    guard let layer = try? ReadOnlyLayer(file: file), let stack = try? LayerStack(lowers: [layer, layer]) else { return 0 }
    var buf = [UInt8](repeating: 0, count: 65536)
    for s in layer.segments.prefix(16) {
        _ = try? buf.withUnsafeMutableBytes { try stack.read(into: $0, at: s.offset &* 512) }
    }
    _ = stack.flattenedIndex()
    return 0
}
