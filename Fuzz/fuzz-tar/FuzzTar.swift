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

/// Checks every mapping the metadata-only apply registers: aligned, inside the disk and,
/// for tar-meta, inside the stream it names.
final class CheckingMapping: TargetMapping {
    let diskSize: UInt64
    let streamSize: UInt64
    init(diskSize: UInt64, streamSize: UInt64) {
        self.diskSize = diskSize
        self.streamSize = streamSize
    }
    func mapTarget(deviceOffset: UInt64, length: UInt64, targetOffset: UInt64) throws {
        guard deviceOffset % 512 == 0, length % 512 == 0, targetOffset % 512 == 0, length > 0,
              deviceOffset <= diskSize, length <= diskSize - deviceOffset,
              targetOffset <= streamSize, length <= streamSize - targetOffset else {
            fatalError("bad mapping device \(deviceOffset) +\(length) -> target \(targetOffset) (disk \(diskSize), stream \(streamSize))")
        }
    }
}

/// libFuzzer entry: the bytes are a layer stream (tar, maybe gzip/zstd). Applying it
/// natively, metadata-only (TurboOCI's raw header walker), and as a tar-meta file may
/// fail, but must not crash, hang or corrupt memory, every mapping must be aligned and
/// inside its stream, and the file system must still close.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let input = MemoryFile(bytes: bytes, name: "input", writable: false)
    for pass in 0..<3 {
        let disk = MemoryFile(bytes: template, name: "disk")
        guard let fs = try? Ext4Filesystem(file: disk, epoch: 1_700_000_000) else { fatalError("template does not open") }
        let applier = TarApplier(fs: fs)
        switch pass {
        case 0: _ = try? applier.apply(input)
        case 1: _ = try? applier.applyMetaOnly(stream: input, sink: CheckingMapping(diskSize: disk.size, streamSize: input.size))
        default:
            let stream: UInt64 = 1 << 24
            _ = try? applier.applyTarMeta(input, streamSize: stream, sink: CheckingMapping(diskSize: disk.size, streamSize: stream))
        }
        _ = try? fs.listing()
        _ = try? fs.close()
    }
    return 0
}
