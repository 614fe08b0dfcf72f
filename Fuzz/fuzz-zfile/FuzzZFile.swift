import BlockIO
import ZFile

/// libFuzzer entry: the bytes are a ZFile (maybe tar-wrapped). Any error is fine;
/// a crash, hang or sanitizer report is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let file = MemoryFile(bytes: Array(UnsafeBufferPointer(start: data, count: size)), writable: false)
    var inner: any BlockFile = file
    if let payload = try? TarWrapper.unwrap(file) { inner = payload }
    guard (try? ZFileReader.isZFile(inner)) == true, let reader = try? ZFileReader(source: inner) else { return 0 }
    let n = Int(min(reader.size, 1 << 20))
    var buf = [UInt8](repeating: 0, count: max(n, 1))
    _ = try? buf.withUnsafeMutableBytes { try reader.read(into: $0, at: 0) }
    if reader.size > 100 {
        _ = try? buf.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<min(n, 5000)]), at: reader.size / 3) }
    }
    return 0
}
