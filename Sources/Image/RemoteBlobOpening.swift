import BlockIO
import Registry

extension Image {
    /// Opens lower `i`'s registry blob (`repoBlobUrl` + `digest`) through the host-wide
    /// cache and hands it to `body` (direct blob, cached file); returns the blob URL.
    /// Registry failures become overlaybd's phrases, reported against the blob URL.
    static func withRemoteBlob(_ lower: ImageConfig.Lower, index i: Int, config: ImageConfig, global: GlobalConfig,
                               sources: inout RemoteSources?, log: @Sendable (String) -> Void,
                               _ body: (RemoteBlob, any BlockFile) throws -> Void) throws -> String {
        guard !config.repoBlobUrl.isEmpty else {
            throw ImageError.config(path: config.path, detail: "lowers[\(i)]: no local copy and no 'repoBlobUrl' to fetch \(lower.digest) from")
        }
        let url: RepositoryURL
        do { url = try RepositoryURL(repoBlobUrl: config.repoBlobUrl) } catch {
            throw ImageError.config(path: config.path, detail: "\(error)")
        }
        let src = sources ?? RemoteSources(global: global)
        sources = src
        let blobURL = url.description + "/" + lower.digest
        do {
            let client = try src.client(for: url)
            let cache = try src.cache()
            let blob = try RemoteBlob(client: client, repository: url.repository, digest: lower.digest,
                                      size: lower.size > 0 ? lower.size : nil)
            let cached: any BlockFile
            if let cache {
                cached = try cache.open(key: lower.digest, upstream: blob)
            } else {
                log("the registry cache folder \(global.effectiveCache.dir) is in use by another process: lowers[\(i)] is read without it")
                cached = blob
            }
            try body(blob, cached)
        } catch let e as ImageError {
            throw e
        } catch let e as RegistryError {
            throw ImageError.layer(path: blobURL, detail: "lowers[\(i)]: \(e.reason)")
        } catch {
            throw ImageError.layer(path: blobURL, detail: "lowers[\(i)]: \(Image.strip(error, blobURL))")
        }
        return blobURL
    }
}
