import FoundationEssentials
import Registry

/// A per-image `config.v1.json`, with overlaybd's field names and meanings.
/// Paths inside it may be relative to the config file's folder.
public struct ImageConfig: Sendable, Equatable {
    /// One lower layer (bottom to top in `lowers`).
    public struct Lower: Sendable, Equatable, Decodable {
        public var file: String = ""
        public var dir: String = ""
        public var digest: String = ""
        public var size: UInt64 = 0
        public var targetFile: String = ""
        public var targetDigest: String = ""
        public var gzipIndex: String = ""

        enum CodingKeys: String, CodingKey { case file, dir, digest, size, targetFile, targetDigest, gzipIndex }

        public init(file: String = "", dir: String = "") {
            self.file = file
            self.dir = dir
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            file = try c.value(.file, default: "")
            dir = try c.value(.dir, default: "")
            digest = try c.value(.digest, default: "")
            size = try c.value(.size, default: 0)
            targetFile = try c.value(.targetFile, default: "")
            targetDigest = try c.value(.targetDigest, default: "")
            gzipIndex = try c.value(.gzipIndex, default: "")
        }
    }

    /// The writable layer.
    public struct Upper: Sendable, Equatable, Decodable {
        public var index: String = ""
        public var data: String = ""
        public var target: String = ""
        public var gzipIndex: String = ""

        enum CodingKeys: String, CodingKey { case index, data, target, gzipIndex }

        public init(index: String = "", data: String = "") {
            self.index = index
            self.data = data
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            index = try c.value(.index, default: "")
            data = try c.value(.data, default: "")
            target = try c.value(.target, default: "")
            gzipIndex = try c.value(.gzipIndex, default: "")
        }
    }

    public var repoBlobUrl: String = ""
    public var lowers: [Lower] = []
    public var upper: Upper = Upper()
    public var resultFile: String = ""
    /// The image's own `download` object, if it has one.
    public var download: DownloadConfig?
    public var accelerationLayer: Bool = false
    public var recordTracePath: String = ""
    /// Folder of the config file: relative paths are resolved against it.
    public var baseDirectory: String = "."
    /// Where the config was read from.
    public var path: String = "config.v1.json"

    public init() {}

    /// Whether the config names a writable layer.
    public var hasUpper: Bool { !upper.data.isEmpty || !upper.index.isEmpty }

    /// Reads and validates `path`.
    public static func load(path: String) throws -> ImageConfig {
        try parse(Paths.readConfigBytes(path), path: path)
    }

    /// Parses config bytes; `path` names the file in errors and anchors relative paths.
    public static func parse(_ data: Data, path: String) throws -> ImageConfig {
        var config = try JSONFields.decode(Raw.self, from: data, path: path).config
        config.path = path
        config.baseDirectory = Paths.directory(of: path)
        try config.validate()
        return config
    }

    /// Rejects what obd cannot honour yet, with a clear message.
    public func validate() throws {
        if accelerationLayer && !recordTracePath.isEmpty {
            throw ImageError.config(path: path, detail: "'recordTracePath' cannot be used with 'accelerationLayer' (a trace is not recorded over an acceleration layer)")
        }
        if accelerationLayer && lowers.isEmpty {
            throw ImageError.config(path: path, detail: "'accelerationLayer' needs at least one lower (the top lower is the acceleration layer)")
        }
        try download?.validate(path: path)
        if hasUpper && (upper.data.isEmpty || upper.index.isEmpty) {
            throw ImageError.config(path: path, detail: "'upper' needs both 'data' and 'index'")
        }
        if lowers.count + (hasUpper ? 1 : 0) > 255 {
            throw ImageError.config(path: path, detail: "\(lowers.count) lowers exceed the limit of 255 layers")
        }
        for (i, l) in lowers.enumerated() {
            if l.targetFile.isEmpty && l.targetDigest.isEmpty {
                if !l.gzipIndex.isEmpty {
                    throw ImageError.config(path: path, detail: "lowers[\(i)]: 'gzipIndex' needs a TurboOCI target ('targetFile' or 'targetDigest')")
                }
            } else if !l.targetDigest.isEmpty && !Digest.isSHA256(l.targetDigest) {
                throw ImageError.config(path: path, detail: "lowers[\(i)]: 'targetDigest' '\(l.targetDigest)' is not sha256:<64 lowercase hex>")
            }
            if l.file.isEmpty && l.dir.isEmpty && l.digest.isEmpty {
                throw ImageError.config(path: path, detail: "lowers[\(i)]: needs 'file', 'dir' or 'digest'")
            }
            if !l.digest.isEmpty && !Digest.isSHA256(l.digest) {
                throw ImageError.config(path: path, detail: "lowers[\(i)]: 'digest' '\(l.digest)' is not sha256:<64 lowercase hex>")
            }
        }
    }

    /// `path` made absolute against the config's folder.
    public func resolve(_ p: String) -> String { Paths.resolve(p, against: baseDirectory) }

    private struct Raw: Decodable {
        var config = ImageConfig()
        enum CodingKeys: String, CodingKey {
            case repoBlobUrl, lowers, upper, resultFile, download, accelerationLayer, recordTracePath
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            config.repoBlobUrl = try c.value(.repoBlobUrl, default: "")
            config.lowers = try c.value(.lowers, default: [])
            config.upper = try c.value(.upper, default: Upper())
            config.resultFile = try c.value(.resultFile, default: "")
            config.download = try c.decodeIfPresent(DownloadConfig.self, forKey: .download)
            config.accelerationLayer = try c.value(.accelerationLayer, default: false)
            config.recordTracePath = try c.value(.recordTracePath, default: "")
        }
    }
}
