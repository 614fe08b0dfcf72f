import BlockIO
import Glibc
import ZFile

extension Image {
    /// The trace of an acceleration layer (the top lower with `accelerationLayer: true`),
    /// which is not opened as a disk layer: `dir/trace` when it exists, else, for a
    /// remote layer, the blob (a tar holding one file `trace`) read through the cache.
    /// A layer with neither has nothing to prefetch (logged).
    static func accelerationTrace(_ lower: ImageConfig.Lower, index i: Int, config: ImageConfig, global: GlobalConfig,
                                  sources: inout RemoteSources?, log: @Sendable (String) -> Void) throws -> TraceMode {
        let field = "lowers[\(i)] (acceleration layer)"
        if !lower.dir.isEmpty {
            let path = config.resolve(lower.dir) + "/trace"
            if access(path, F_OK) == 0 {
                let file: LocalFile
                do { file = try LocalFile(path: path, map: false) } catch {
                    throw ImageError.layer(path: path, detail: "\(field): \(Image.strip(error, path))")
                }
                return try TraceSetup.replay(file: file, source: path, config: config, field: field, log: log)
            }
            if lower.digest.isEmpty {
                log("\(field): no trace at \(path): nothing to prefetch")
                return .none
            }
        }
        guard !lower.digest.isEmpty else {
            log("\(field) has neither 'dir' nor 'digest': nothing to prefetch")
            return .none
        }
        var mode = TraceMode.none
        _ = try withRemoteBlob(lower, index: i, config: config, global: global, sources: &sources, log: log) { blob, cached in
            guard let payload = try TarWrapper.unwrap(cached) else {
                throw ImageError.layer(path: blob.name, detail: "\(field): the blob is not a tar holding a 'trace' file")
            }
            mode = try TraceSetup.replay(file: payload, source: blob.name + " (trace)", config: config, field: field, log: log)
        }
        return mode
    }
}
