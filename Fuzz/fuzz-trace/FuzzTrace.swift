import BlockIO
import Trace

/// libFuzzer entry: the bytes are a trace file. Parse them (from bytes and as a file,
/// which must agree; the lenient inspection must agree too), and plan a replay over small
/// layers. Without the magic the bytes are a priority list: parse it, and check that no
/// entry can leave the root. Nothing may crash or hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let fromBytes = try? TraceFormat.decode(bytes, path: "fuzz")
    let fromFile = try? TraceFormat.read(from: MemoryFile(bytes: bytes, name: "fuzz", writable: false))
    precondition(fromBytes == fromFile, "bytes and file parsers disagree")
    if let inspected = try? TraceInspection(bytes: bytes, path: "fuzz"), inspected.checksumHolds {
        precondition(inspected.records == fromBytes, "inspection and decode disagree on a trace whose checksum holds")
    }
    if !TraceFormat.hasMagic(bytes) { fuzzPriorityList(bytes) }
    guard let records = fromBytes else { return 0 }
    precondition(TraceFormat.encode(records).count == bytes.count, "re-encoding changes the size")
    let plan = ReplayPlan(records: records, maxRange: 4096, layerSizes: [0: 1 << 20, 1: 65536, 2: 0])
    for r in plan.ranges { precondition(r.length > 0 && r.length <= 4096 && r.end <= 1 << 20, "bad range \(r)") }
    return 0
}

/// The priority-list parser's invariants: within the size limit it never throws; every
/// entry's components are plain names (no empty, ".", ".." or "/"), at most 255 bytes.
func fuzzPriorityList(_ bytes: [UInt8]) {
    do {
        let list = try PriorityList(bytes: bytes, path: "fuzz")
        precondition(bytes.count <= PriorityList.maxSize, "an oversized list was accepted")
        for e in list.entries {
            precondition(e.line >= 1 && e.path.hasPrefix("/"), "bad entry \(e)")
            for c in e.components {
                precondition(!c.isEmpty && c != "." && c != ".." && !c.contains("/") && c.utf8.count <= 255, "component \(c) of \(e)")
            }
        }
        precondition(list.entries.count + list.skipped.count <= bytes.count + 1, "more lines than bytes")
    } catch {
        precondition(bytes.count > PriorityList.maxSize, "a list within the limit was refused: \(error)")
    }
}
