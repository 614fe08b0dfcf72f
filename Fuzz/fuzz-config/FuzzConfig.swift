import FoundationEssentials
import Image

/// libFuzzer entry: the bytes are a config.v1.json or an overlaybd.json.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    _ = try? ImageConfig.parse(bytes, path: "/fuzz/config.v1.json")
    _ = try? GlobalConfig.parse(bytes, path: "/fuzz/overlaybd.json")
    return 0
}
