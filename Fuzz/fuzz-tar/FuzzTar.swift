import BlockIO
import Convert
import Ext4
import Glibc

/// An empty 8 MiB ext4, made once; every input is applied to a fresh copy of it.
nonisolated(unsafe) let template: [UInt8] = {
    let disk = MemoryFile(bytes: [UInt8](repeating: 0, count: 8 << 20), name: "template")
    do {
        try Ext4Maker.make(on: disk, uuid: "12345678-1234-1234-1234-123456789abc", epoch: 1_700_000_000, scratch: "/tmp")
    } catch {
        fatalError("fuzz-tar: cannot make the template file system: \(error)")
    }
    return disk.bytes
}()

/// libFuzzer entry: the bytes are a layer stream (tar, maybe gzip/zstd). Applying it
/// may fail, but must not crash, hang or corrupt memory, and the file system must
/// still close.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let disk = MemoryFile(bytes: template, name: "disk")
    let input = MemoryFile(bytes: Array(UnsafeBufferPointer(start: data, count: size)), name: "input", writable: false)
    guard let fs = try? Ext4Filesystem(file: disk, epoch: 1_700_000_000) else { fatalError("template does not open") }
    _ = try? TarApplier(fs: fs).apply(input)
    _ = try? fs.listing()
    _ = try? fs.close()
    return 0
}
