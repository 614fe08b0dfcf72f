import Daemon
import FoundationEssentials

/// An empty registry: requests other than adds run against it (nothing is opened).
let registry = DiskRegistry(options: .init())
let api = ControlAPI(registry: registry)
let methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "get"]

/// libFuzzer entry: byte 0 picks the method, the bytes up to the first newline are the
/// request target, the rest is the body. Decoding must not crash; an add must decode to a
/// spec that validates and survives a JSON round trip; every error must answer with a
/// 4xx/5xx status and a JSON body `{"error", "code"}`; non-add routes run against an
/// empty registry and must answer 200 or 404.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let method = methods[Int(first) % methods.count]
    let rest = bytes.dropFirst()
    let newline = rest.firstIndex(of: 0x0a) ?? rest.endIndex
    let target = String(decoding: rest[rest.startIndex..<newline], as: UTF8.self)
    let body = newline < rest.endIndex ? Array(rest[(newline + 1)...]) : []
    do throws(DaemonError) {
        let route = try ControlRoute.decode(method: method, target: target, body: body)
        switch route {
        case let .addDisk(spec):
            precondition((try? spec.validate()) != nil, "a decoded spec does not validate")
            let encoded = try? JSONEncoder().encode(spec)
            precondition(encoded.flatMap { try? DiskSpec.decode(json: Array($0)) } == spec, "spec does not survive a round trip")
        default:
            let r = api.respond(method: method, target: target, body: body)
            precondition(r.status == 200 || r.status == 404, "status \(r.status) for \(route)")
        }
    } catch {
        precondition((400..<600).contains(error.httpStatus), "status \(error.httpStatus) for \(error)")
        let r = ControlAPI.error(error)
        let decoded = try? JSONDecoder().decode(ControlAPI.ErrorBody.self, from: Data(r.body))
        precondition(decoded?.code == error.code && decoded?.error == error.description, "error body does not decode")
    }
    return 0
}
