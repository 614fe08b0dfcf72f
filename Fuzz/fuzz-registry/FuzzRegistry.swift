import Convert
import FoundationEssentials
import Registry

/// libFuzzer entry: the bytes are a credential file, a manifest or an image reference.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let store = try? CredentialStore.parse(Data(bytes)) {
        _ = store.credential(host: "registry.example", repository: "a/b/c")
    }
    if let v = try? JSONValue.parse(bytes) { _ = try? v.bytes() }
    let text = String(decoding: bytes, as: UTF8.self)
    _ = try? ImageReference(parsing: text)
    _ = try? RepositoryURL(repoBlobUrl: text)
    _ = try? ImageLocation(parsing: text)
    return 0
}
