import BlockIO
import Trace

/// libFuzzer entry: the bytes are a trace file. Parse them (from bytes and as a file,
/// which must agree), and plan a replay over small layers; nothing may crash or hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let fromBytes = try? TraceFormat.decode(bytes, path: "fuzz")
    let fromFile = try? TraceFormat.read(from: MemoryFile(bytes: bytes, name: "fuzz", writable: false))
    precondition(fromBytes == fromFile, "bytes and file parsers disagree")
    _ = TraceFormat.hasMagic(bytes)
    guard let records = fromBytes else { return 0 }
    precondition(TraceFormat.encode(records).count == bytes.count, "re-encoding changes the size")
    let plan = ReplayPlan(records: records, maxRange: 4096, layerSizes: [0: 1 << 20, 1: 65536, 2: 0])
    for r in plan.ranges { precondition(r.length > 0 && r.length <= 4096 && r.end <= 1 << 20, "bad range \(r)") }
    return 0
}
