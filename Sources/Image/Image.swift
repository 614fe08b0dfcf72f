import BlockIO
import Glibc
import LSMT

/// An image assembled from a `config.v1.json`: its lowers (bottom to top), an optional
/// writable upper, served as one virtual disk (`stack`).
public final class Image: Sendable {
    public let config: ImageConfig
    public let global: GlobalConfig
    public let stack: LayerStack
    /// The file each lower was opened from, bottom to top.
    public let lowerPaths: [String]

    /// Opens the image described by the config at `configPath`.
    /// - Parameter writable: open the upper for writing (otherwise it is only read).
    public static func open(configPath: String, global: GlobalConfig = GlobalConfig(), writable: Bool = false) throws -> Image {
        try Image(config: ImageConfig.load(path: configPath), global: global, writable: writable)
    }

    public init(config: ImageConfig, global: GlobalConfig = GlobalConfig(), writable: Bool = false) throws {
        self.config = config
        self.global = global
        if config.download == nil && global.downloadEnable {
            // overlaybd copies the global `download` object into configs that lack one.
            throw ImageError.config(path: global.path, detail: "'download.enable' (background download) is not supported yet")
        }
        var layers: [ReadOnlyLayer] = []
        var paths: [String] = []
        for (i, lower) in config.lowers.enumerated() {
            let path = try Image.locate(lower, index: i, config: config)
            do {
                layers.append(try LayerOpener.open(path: path, ioEngine: global.ioEngine))
            } catch {
                throw ImageError.layer(path: path, detail: "lowers[\(i)]: \(Image.strip(error, path))")
            }
            paths.append(path)
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
    }

    /// The local file a lower resolves to: `file`, then `dir/overlaybd.commit`,
    /// `dir/.commit`, `dir/overlaybd.sealed`.
    static func locate(_ lower: ImageConfig.Lower, index i: Int, config: ImageConfig) throws -> String {
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
        if !lower.digest.isEmpty {
            throw ImageError.config(path: config.path, detail: "lowers[\(i)]: no local copy (\(tried.isEmpty ? "none named" : "tried " + tried.joined(separator: ", "))) and remote layers ('digest' + 'repoBlobUrl') are not supported yet")
        }
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
