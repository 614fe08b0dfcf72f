import FoundationEssentials
import Registry

/// The host-wide `overlaybd.json`, with overlaybd's keys and defaults. Unknown keys
/// are ignored; a known key with the wrong type is an error.
public struct GlobalConfig: Sendable, Equatable {
    public struct LogConfig: Sendable, Equatable {
        public var logLevel = 1
        public var logPath = ""
        public var logSizeMB = 10
        public var logRotateNum = 3
    }

    public struct CacheConfig: Sendable, Equatable {
        public var cacheType = ""
        public var cacheDir = "/opt/overlaybd/registry_cache"
        public var cacheSizeGB = 4
        public var refillSize = 262_144
        public var blockSize = 65_536
    }

    /// Prometheus metrics endpoint.
    public struct ExporterConfig: Sendable, Equatable {
        public var enable = false
        public var uriPrefix = "/metrics"
        public var port = 9863
        /// obd extension: the address to listen on.
        public var address = "0.0.0.0"
        /// Microseconds (overlaybd's unit); obd renders metrics on each scrape.
        public var updateInterval = 60_000_000
    }

    /// Client TLS certificate and key for registries.
    public struct CertConfig: Sendable, Equatable {
        public var certFile = ""
        public var keyFile = ""
    }

    /// obd extension: registry deadline, outage policy, CA bundle and hosts allowed
    /// without TLS checks. Unknown keys in this object are rejected.
    public struct RegistryConfig: Sendable, Equatable {
        public var timeoutSeconds = 30
        /// Blob range reads keep retrying through a network or registry outage instead of
        /// failing at the deadline (the disk blocks rather than returning I/O errors).
        public var blockOnOutage = false
        public var caFile = ""
        public var insecureHosts: [String] = []
    }

    /// A P2P proxy for blob range reads, as overlaybd's `p2pConfig`. Unknown keys in this
    /// object are rejected.
    public struct P2PConfig: Sendable, Equatable {
        public var enable = false
        public var address = "http://localhost:9731/accelerator"
    }

    /// Trace replay (prefetch): overlaybd's `concurrency`, and obd's `maxRange`.
    public struct PrefetchConfig: Sendable, Equatable {
        /// Ranges read at once, each on its own thread.
        public var concurrency = 16
        /// obd extension: the largest merged range in bytes (a multiple of 4096).
        public var maxRange = 4 << 20
    }

    /// The on-disk cache of decompressed TurboOCI gzip targets (overlaybd's keys and
    /// defaults): a `BlockCache` over each target's uncompressed stream, keyed by the
    /// target digest.
    public struct GzipCacheConfig: Sendable, Equatable {
        public var enable = false
        public var cacheDir = "/opt/overlaybd/gzip_cache"
        public var cacheSizeGB = 4
        public var refillSize = 1_048_576
    }

    public struct CredentialConfig: Sendable, Equatable {
        public var mode = ""
        public var path = ""
        public var timeout = 1
    }

    public var logConfig = LogConfig()
    public var logLevel = 1
    public var logPath = "/var/log/overlaybd.log"
    public var cacheConfig = CacheConfig()
    public var registryCacheDir = "/opt/overlaybd/registry_cache"
    public var registryCacheSizeGB = 4
    public var cacheType = "file"
    public var credentialFilePath = "/opt/overlaybd/cred.json"
    public var credentialConfig = CredentialConfig()
    public var prefetchConfig = PrefetchConfig()
    /// 0 = pread, 1 = libaio, 2 = posix aio.
    public var ioEngine = 0
    public var enableAudit = false
    public var auditPath = ""
    public var registryFsVersion = "v2"
    /// The global `download` object (copied whole into image configs that lack one).
    public var download: DownloadConfig?
    public var exporterConfig = ExporterConfig()
    public var certConfig = CertConfig()
    /// obd's own registry options (not in overlaybd).
    public var registryConfig = RegistryConfig()
    public var p2pConfig = P2PConfig()
    public var gzipCacheConfig = GzipCacheConfig()
    /// Where the config was read from (empty for built-in defaults).
    public var path = ""

    public init() {}

    /// The registry cache in effect: `cacheConfig` when its `cacheType` is set, else the
    /// legacy top-level keys (as overlaybd does).
    public var effectiveCache: (type: String, dir: String, sizeGB: Int, refillSize: Int) {
        if !cacheConfig.cacheType.isEmpty {
            return (cacheConfig.cacheType, cacheConfig.cacheDir, cacheConfig.cacheSizeGB, cacheConfig.refillSize)
        }
        return (cacheType, registryCacheDir, registryCacheSizeGB, cacheConfig.refillSize)
    }

    /// The credential file in effect: `credentialConfig.path` in "file" mode, else the
    /// legacy `credentialFilePath`.
    public var credentialFile: String {
        credentialConfig.mode == "file" ? credentialConfig.path : credentialFilePath
    }

    /// The default location of the global config.
    public static let defaultPath = "/etc/overlaybd/overlaybd.json"

    /// `path` if given, else the default path when it exists, else built-in defaults.
    public static func load(path: String?) throws -> GlobalConfig {
        if let path { return try load(from: path) }
        if FileManagerLite.exists(defaultPath) { return try load(from: defaultPath) }
        return GlobalConfig()
    }

    public static func load(from path: String) throws -> GlobalConfig {
        try parse(Paths.readConfigBytes(path), path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> GlobalConfig {
        var c = try JSONFields.decode(Raw.self, from: data, path: path).config
        c.path = path
        guard (0...2).contains(c.ioEngine) else {
            throw ImageError.config(path: path, detail: "field 'ioEngine': \(c.ioEngine) is not 0 (psync), 1 (libaio) or 2 (posix aio)")
        }
        try c.download?.validate(path: path)
        guard (1...3600).contains(c.registryConfig.timeoutSeconds) else {
            throw ImageError.config(path: path, detail: "field 'registryConfig.timeoutSeconds': \(c.registryConfig.timeoutSeconds) is not between 1 and 3600")
        }
        if c.p2pConfig.enable {
            do { _ = try P2PProxy(address: c.p2pConfig.address) } catch {
                throw ImageError.config(path: path, detail: "field 'p2pConfig.address': \(error)")
            }
        }
        guard (0...65535).contains(c.exporterConfig.port) else {
            throw ImageError.config(path: path, detail: "field 'exporterConfig.port': \(c.exporterConfig.port) is not a TCP port")
        }
        guard (1...256).contains(c.prefetchConfig.concurrency) else {
            throw ImageError.config(path: path, detail: "field 'prefetchConfig.concurrency': \(c.prefetchConfig.concurrency) is not between 1 and 256")
        }
        guard (4096...(64 << 20)).contains(c.prefetchConfig.maxRange), c.prefetchConfig.maxRange % 4096 == 0 else {
            throw ImageError.config(path: path, detail: "field 'prefetchConfig.maxRange': \(c.prefetchConfig.maxRange) is not a multiple of 4096 between 4096 and 67108864")
        }
        if c.gzipCacheConfig.enable {
            let g = c.gzipCacheConfig
            guard g.cacheSizeGB >= 1, g.refillSize >= 4096, g.refillSize & (g.refillSize - 1) == 0 else {
                throw ImageError.config(path: path, detail: "field 'gzipCacheConfig': cacheSizeGB must be >= 1 and refillSize a power of two >= 4096")
            }
            // Both caches key their files by blob digest: one folder would mix a target's
            // compressed bytes with its decompressed stream.
            func trimmed(_ d: String) -> String { d.count > 1 && d.hasSuffix("/") ? String(d.dropLast()) : d }
            guard trimmed(g.cacheDir) != trimmed(c.effectiveCache.dir) else {
                throw ImageError.config(path: path, detail: "field 'gzipCacheConfig.cacheDir': '\(g.cacheDir)' is also the registry cache folder; the gzip cache needs a folder of its own")
            }
        }
        if c.ioEngine == 2 {
            throw ImageError.config(path: path, detail: "field 'ioEngine': 2 (posix aio) is not supported; use 0 (pread) or 1 (libaio)")
        }
        return c
    }

    private struct Raw: Decodable {
        var config = GlobalConfig()
        enum Keys: String, CodingKey {
            case logConfig, logLevel, logPath, cacheConfig, registryCacheDir, registryCacheSizeGB, cacheType
            case credentialFilePath, credentialConfig, ioEngine, enableAudit, auditPath, registryFsVersion, download
            case exporterConfig, certConfig, registryConfig, prefetchConfig, p2pConfig, gzipCacheConfig
        }
        enum GzipCacheKeys: String, CodingKey { case enable, cacheDir, cacheSizeGB, refillSize }
        enum PrefetchKeys: String, CodingKey { case concurrency, maxRange }
        enum ExporterKeys: String, CodingKey { case enable, uriPrefix, port, updateInterval, address }
        enum CertKeys: String, CodingKey { case certFile, keyFile }
        enum RegistryKeys: String, CodingKey, CaseIterable { case timeoutSeconds, blockOnOutage, caFile, insecureHosts }
        enum P2PKeys: String, CodingKey, CaseIterable { case enable, address }
        enum LogKeys: String, CodingKey { case logLevel, logPath, logSizeMB, logRotateNum }
        enum CacheKeys: String, CodingKey { case cacheType, cacheDir, cacheSizeGB, refillSize, blockSize }
        enum CredKeys: String, CodingKey { case mode, path, timeout }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            var g = GlobalConfig()
            g.logLevel = try c.value(.logLevel, default: g.logLevel)
            g.logPath = try c.value(.logPath, default: g.logPath)
            if c.contains(.logConfig) {
                let l = try c.nestedContainer(keyedBy: LogKeys.self, forKey: .logConfig)
                g.logConfig.logLevel = try l.value(.logLevel, default: g.logConfig.logLevel)
                g.logConfig.logPath = try l.value(.logPath, default: g.logConfig.logPath)
                g.logConfig.logSizeMB = try l.value(.logSizeMB, default: g.logConfig.logSizeMB)
                g.logConfig.logRotateNum = try l.value(.logRotateNum, default: g.logConfig.logRotateNum)
            }
            g.registryCacheDir = try c.value(.registryCacheDir, default: g.registryCacheDir)
            g.registryCacheSizeGB = try c.value(.registryCacheSizeGB, default: g.registryCacheSizeGB)
            g.cacheType = try c.value(.cacheType, default: g.cacheType)
            if c.contains(.cacheConfig) {
                let k = try c.nestedContainer(keyedBy: CacheKeys.self, forKey: .cacheConfig)
                g.cacheConfig.cacheType = try k.value(.cacheType, default: g.cacheConfig.cacheType)
                g.cacheConfig.cacheDir = try k.value(.cacheDir, default: g.cacheConfig.cacheDir)
                g.cacheConfig.cacheSizeGB = try k.value(.cacheSizeGB, default: g.cacheConfig.cacheSizeGB)
                g.cacheConfig.refillSize = try k.value(.refillSize, default: g.cacheConfig.refillSize)
                g.cacheConfig.blockSize = try k.value(.blockSize, default: g.cacheConfig.blockSize)
            }
            g.credentialFilePath = try c.value(.credentialFilePath, default: g.credentialFilePath)
            if c.contains(.credentialConfig) {
                let k = try c.nestedContainer(keyedBy: CredKeys.self, forKey: .credentialConfig)
                g.credentialConfig.mode = try k.value(.mode, default: g.credentialConfig.mode)
                g.credentialConfig.path = try k.value(.path, default: g.credentialConfig.path)
                g.credentialConfig.timeout = try k.value(.timeout, default: g.credentialConfig.timeout)
            }
            g.ioEngine = try c.value(.ioEngine, default: g.ioEngine)
            g.enableAudit = try c.value(.enableAudit, default: g.enableAudit)
            g.auditPath = try c.value(.auditPath, default: g.auditPath)
            g.registryFsVersion = try c.value(.registryFsVersion, default: g.registryFsVersion)
            g.download = try c.decodeIfPresent(DownloadConfig.self, forKey: .download)
            if c.contains(.exporterConfig) {
                let k = try c.nestedContainer(keyedBy: ExporterKeys.self, forKey: .exporterConfig)
                g.exporterConfig.enable = try k.value(.enable, default: g.exporterConfig.enable)
                g.exporterConfig.uriPrefix = try k.value(.uriPrefix, default: g.exporterConfig.uriPrefix)
                g.exporterConfig.port = try k.value(.port, default: g.exporterConfig.port)
                g.exporterConfig.updateInterval = try k.value(.updateInterval, default: g.exporterConfig.updateInterval)
                g.exporterConfig.address = try k.value(.address, default: g.exporterConfig.address)
            }
            if c.contains(.certConfig) {
                let k = try c.nestedContainer(keyedBy: CertKeys.self, forKey: .certConfig)
                g.certConfig.certFile = try k.value(.certFile, default: "")
                g.certConfig.keyFile = try k.value(.keyFile, default: "")
            }
            if c.contains(.prefetchConfig) {
                let k = try c.nestedContainer(keyedBy: PrefetchKeys.self, forKey: .prefetchConfig)
                g.prefetchConfig.concurrency = try k.value(.concurrency, default: g.prefetchConfig.concurrency)
                g.prefetchConfig.maxRange = try k.value(.maxRange, default: g.prefetchConfig.maxRange)
            }
            if c.contains(.registryConfig) {
                let k = try c.nestedContainer(keyedBy: RegistryKeys.self, forKey: .registryConfig)
                try Self.rejectUnknownKeys(c, .registryConfig, known: RegistryKeys.self)
                g.registryConfig.timeoutSeconds = try k.value(.timeoutSeconds, default: g.registryConfig.timeoutSeconds)
                g.registryConfig.blockOnOutage = try k.value(.blockOnOutage, default: false)
                g.registryConfig.caFile = try k.value(.caFile, default: "")
                g.registryConfig.insecureHosts = try k.value(.insecureHosts, default: [])
            }
            if c.contains(.p2pConfig) {
                let k = try c.nestedContainer(keyedBy: P2PKeys.self, forKey: .p2pConfig)
                try Self.rejectUnknownKeys(c, .p2pConfig, known: P2PKeys.self)
                g.p2pConfig.enable = try k.value(.enable, default: g.p2pConfig.enable)
                g.p2pConfig.address = try k.value(.address, default: g.p2pConfig.address)
            }
            if c.contains(.gzipCacheConfig) {
                let k = try c.nestedContainer(keyedBy: GzipCacheKeys.self, forKey: .gzipCacheConfig)
                g.gzipCacheConfig.enable = try k.value(.enable, default: g.gzipCacheConfig.enable)
                g.gzipCacheConfig.cacheDir = try k.value(.cacheDir, default: g.gzipCacheConfig.cacheDir)
                g.gzipCacheConfig.cacheSizeGB = try k.value(.cacheSizeGB, default: g.gzipCacheConfig.cacheSizeGB)
                g.gzipCacheConfig.refillSize = try k.value(.refillSize, default: g.gzipCacheConfig.refillSize)
            }
            config = g
        }

        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        /// A key obd does not implement in one of these objects is an error, never ignored.
        static func rejectUnknownKeys<K: CodingKey & CaseIterable & RawRepresentable>(
            _ c: KeyedDecodingContainer<Keys>, _ key: Keys, known: K.Type
        ) throws where K.RawValue == String {
            let all = try c.nestedContainer(keyedBy: AnyKey.self, forKey: key)
            for k in all.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) where K(rawValue: k.stringValue) == nil {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: [key, k],
                    debugDescription: "not a key obd implements (known: \(K.allCases.map(\.rawValue).joined(separator: ", ")))"))
            }
        }
    }
}

/// File existence without Foundation's FileManager.
enum FileManagerLite {
    static func exists(_ path: String) -> Bool {
        (try? LocalFileProbe.exists(path)) ?? false
    }
}
