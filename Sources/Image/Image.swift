import BlockIO
import Glibc
import LSMT
import Registry

/// An image assembled from a `config.v1.json`: its lowers (bottom to top), an optional
/// writable upper, served as one virtual disk (`stack`).
public final class Image: Sendable {
    public let config: ImageConfig
    public let global: GlobalConfig
    public let stack: LayerStack
    /// The file each lower was opened from, bottom to top.
    public let lowerPaths: [String]

    /// Remote lowers (bottom to top among themselves), with their cache and switch state.
    public let remoteLayers: [RemoteLayer]
    /// The background download, when the config enables it and remote lowers have a `dir`.
    public let download: BackgroundDownload?

    /// Whether any lower is read from a registry (reads may then block on the network).
    public var hasRemoteLowers: Bool { !remoteLayers.isEmpty }

    /// Opens the image described by the config at `configPath`.
    /// - Parameters:
    ///   - writable: open the upper for writing (otherwise it is only read).
    ///   - log: receives background-download messages.
    public static func open(configPath: String, global: GlobalConfig = GlobalConfig(), writable: Bool = false,
                            log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Image {
        try Image(config: ImageConfig.load(path: configPath), global: global, writable: writable, log: log)
    }

    public init(config: ImageConfig, global: GlobalConfig = GlobalConfig(), writable: Bool = false,
                log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.config = config
        self.global = global
        var layers: [ReadOnlyLayer] = []
        var paths: [String] = []
        var remotes: [RemoteLayer] = []
        var sources: RemoteSources?
        for (i, lower) in config.lowers.enumerated() {
            if let path = try Image.locate(lower, index: i, config: config) {
                do {
                    layers.append(try LayerOpener.open(path: path, ioEngine: global.ioEngine))
                } catch {
                    throw ImageError.layer(path: path, detail: "lowers[\(i)]: \(Image.strip(error, path))")
                }
                paths.append(path)
                continue
            }
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
                let remote = RemoteLayer(digest: lower.digest, dir: lower.dir.isEmpty ? "" : config.resolve(lower.dir),
                                         blob: blob, cached: cached)
                layers.append(try LayerOpener.open(file: remote.file))
                remotes.append(remote)
            } catch let e as ImageError {
                throw e
            } catch let e as RegistryError {
                throw ImageError.layer(path: blobURL, detail: "lowers[\(i)]: \(e.reason)")
            } catch {
                throw ImageError.layer(path: blobURL, detail: "lowers[\(i)]: \(Image.strip(error, blobURL))")
            }
            paths.append(blobURL)
        }
        var upper: WritableLayer?
        if config.hasUpper {
            let data = config.resolve(config.upper.data)
            let index = config.resolve(config.upper.index)
            do {
                upper = try WritableLayer.open(dataPath: data, indexPath: index, writable: writable)
            } catch {
                throw ImageError.layer(path: data, detail: "upper: \(Image.strip(error, data))")
            }
        }
        stack = try LayerStack(lowers: layers, upper: upper, name: config.path)
        lowerPaths = paths
        remoteLayers = remotes
        let dl = config.download ?? global.download ?? DownloadConfig()
        let targets = remotes.filter { !$0.dir.isEmpty }
        if dl.enable && !targets.isEmpty {
            let d = BackgroundDownload(layers: targets, config: dl, log: log)
            download = d
            d.start()
        } else {
            download = nil
        }
    }

    deinit { download?.stop() }

    /// Before the image goes away (device removal, process exit): stops the background
    /// download and makes the cache's presence maps durable, so a restart finds every
    /// fetched range. Writes to the upper are flushed by `stack.flush()`.
    public func close() {
        download?.stop()
        for r in remoteLayers { try? r.file.remote.flush() }
    }

    /// The local file a lower resolves to: `file`, then `dir/overlaybd.commit`,
    /// `dir/.commit`, `dir/overlaybd.sealed`; nil when there is none but the lower has a
    /// `digest` to fetch from the registry.
    static func locate(_ lower: ImageConfig.Lower, index i: Int, config: ImageConfig) throws -> String? {
        var tried: [String] = []
        if !lower.file.isEmpty {
            let p = config.resolve(lower.file)
            if access(p, F_OK) == 0 { return p }
            tried.append(p)
        }
        if !lower.dir.isEmpty {
            let dir = config.resolve(lower.dir)
            for name in ["overlaybd.commit", ".commit", "overlaybd.sealed"] {
                let p = dir + "/" + name
                if access(p, F_OK) == 0 { return p }
                tried.append(p)
            }
        }
        if !lower.digest.isEmpty { return nil }
        throw ImageError.config(path: config.path, detail: "lowers[\(i)]: layer file not found (tried \(tried.joined(separator: ", ")))")
    }

    /// An error's text without a repeated leading path.
    static func strip(_ error: any Error, _ path: String) -> String { Paths.withoutLeadingPath("\(error)", path) }

    /// Writes `resultFile` (if the config names one): exactly `success` or `failed:<reason>`.
    public static func writeResult(config: ImageConfig, error: (any Error)?) throws {
        guard !config.resultFile.isEmpty else { return }
        let text = error.map { "failed:\($0)" } ?? "success"
        let path = config.resolve(config.resultFile)
        let f = try LocalFile(path: path, mode: .createTruncate)
        try f.writeBytes(Array(text.utf8), at: 0)
    }
}
