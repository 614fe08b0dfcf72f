import BlockCache
import BlockIO
import Glibc
import Gzip
import LSMT

/// TurboOCI lowers (`formats/Config.md`, "TurboOCI lowers"): a lower with `targetFile` or
/// `targetDigest` opens as one warp layer (`WarpLayer`) whose tag-1 ranges read the
/// original layer's uncompressed tar stream.
///
/// - fs meta: `file`, else `dir/ext4.fs.meta`, else the `ext4.fs.meta` member of the
///   turbo layer blob `digest` (remote, through the cache);
/// - target: `targetFile` if it exists, else the registry blob `targetDigest` through the
///   shared cache, like any remote blob (never background-downloaded: it is no LSMT layer);
/// - a gzip target is read through its ddgzidx index: `gzipIndex`, else `dir/gzip.meta`,
///   else the blob's `gzip.meta` member, else one built in memory from the whole target;
///   decompressed data goes through the span cache of `GzipFile`, and through the
///   on-disk `gzipCacheConfig` cache when that is enabled and the target has a digest.
extension Image {
    /// Whether `lower` is a TurboOCI lower.
    static func isTurbo(_ lower: ImageConfig.Lower) -> Bool {
        !lower.targetFile.isEmpty || !lower.targetDigest.isEmpty
    }

    /// What opening a TurboOCI lower gave.
    struct TurboOpened {
        var layer: ReadOnlyLayer
        /// The fs meta's path or blob URL.
        var path: String
        var remotes: [RemoteLayer]
    }

    static func openTurbo(_ lower: ImageConfig.Lower, index i: Int, config: ImageConfig, global: GlobalConfig,
                          sources: inout RemoteSources?, log: @escaping @Sendable (String) -> Void,
                          decorate: (any BlockFile) -> any BlockFile) throws -> TurboOpened {
        var remotes: [RemoteLayer] = []
        var meta: (any BlockFile)?
        var gzipIndex: (any BlockFile)?
        var metaPath = ""
        var tried: [String] = []
        func local(_ p: String) throws -> LocalFile? {
            guard access(p, F_OK) == 0 else { tried.append(p); return nil }
            do { return try LocalFile(path: p) } catch {
                throw ImageError.layer(path: p, detail: "lowers[\(i)]: \(Image.strip(error, p))")
            }
        }
        let dir = lower.dir.isEmpty ? "" : config.resolve(lower.dir)
        if !lower.file.isEmpty, let f = try local(config.resolve(lower.file)) {
            meta = f
            metaPath = f.path
        } else if !dir.isEmpty, let f = try local(dir + "/" + TurboBlobMembers.fsMetaName) {
            meta = f
            metaPath = f.path
        }
        if !lower.gzipIndex.isEmpty {
            gzipIndex = try local(config.resolve(lower.gzipIndex))
            // A named index must exist, unless the turbo blob (fetched below) brings one.
            if gzipIndex == nil && (meta != nil || lower.digest.isEmpty) {
                throw ImageError.config(path: config.path, detail: "lowers[\(i)]: gzipIndex \(config.resolve(lower.gzipIndex)) not found")
            }
        } else if meta != nil, !dir.isEmpty {
            gzipIndex = try local(dir + "/" + TurboBlobMembers.gzipIndexName)
        }
        if meta == nil {
            guard !lower.digest.isEmpty else {
                throw ImageError.config(path: config.path, detail: "lowers[\(i)]: TurboOCI fs meta not found (tried \(tried.joined(separator: ", "))) and no 'digest' of a turbo layer blob to fetch it from")
            }
            var members: [String: any BlockFile] = [:]
            metaPath = try Image.withRemoteBlob(lower, index: i, config: config, global: global, sources: &sources, log: log) { _, cached in
                members = try TurboBlobMembers.read(cached)
            }
            guard let m = members[TurboBlobMembers.fsMetaName] else {
                let names = members.keys.sorted().joined(separator: ", ")
                throw ImageError.layer(path: metaPath, detail: "lowers[\(i)]: the turbo layer blob has no \(TurboBlobMembers.fsMetaName) (members: \(names)); obd reads ext4 fs meta only")
            }
            meta = m
            if gzipIndex == nil { gzipIndex = members[TurboBlobMembers.gzipIndexName] }
        }
        guard let meta else { throw ImageError.config(path: config.path, detail: "lowers[\(i)]: no fs meta") }

        // The target: a local file, or the original layer's blob in the registry.
        var target: (any BlockFile)?
        var targetName = ""
        if !lower.targetFile.isEmpty, let f = try local(config.resolve(lower.targetFile)) {
            target = f
            targetName = f.path
        } else if !lower.targetDigest.isEmpty {
            var t = lower
            t.digest = lower.targetDigest
            t.size = 0
            targetName = try Image.withRemoteBlob(t, index: i, config: config, global: global, sources: &sources, log: log) { blob, cached in
                let r = RemoteLayer(digest: lower.targetDigest, dir: "", blob: blob, cached: cached)
                remotes.append(r)
                target = r.file
            }
        }
        guard let target else {
            throw ImageError.config(path: config.path, detail: "lowers[\(i)]: TurboOCI target not found (tried \(config.resolve(lower.targetFile))) and no 'targetDigest' to fetch it from")
        }
        do {
            let stream = try turboStream(target, index: gzipIndex, digest: lower.targetDigest, i: i, global: global, log: log)
            let (inner, _) = try LayerOpener.unwrap(meta)
            let warp = try WarpLayer(file: inner, target: stream)
            return TurboOpened(layer: ReadOnlyLayer(warp: warp, decorate: decorate), path: metaPath, remotes: remotes)
        } catch let e as ImageError {
            throw e
        } catch {
            throw ImageError.layer(path: metaPath, detail: "lowers[\(i)] (target \(targetName)): \(Image.strip(error, metaPath))")
        }
    }

    /// The uncompressed tar stream of a target: itself if a plain tar, else a `GzipFile`
    /// over it (behind the gzip cache when enabled and `digest` names the target).
    static func turboStream(_ target: any BlockFile, index: (any BlockFile)?, digest: String, i: Int,
                            global: GlobalConfig, log: @Sendable (String) -> Void) throws -> any BlockFile {
        let head = try target.readBytes(at: 0, count: Int(min(2, target.size)))
        guard head == [0x1F, 0x8B] else {
            if head == [0x28, 0xB5] {
                throw ImageError.layer(path: target.name, detail: "lowers[\(i)]: a zstd target cannot be read at random offsets (TurboOCI targets are gzip or plain tar)")
            }
            return target
        }
        let indexFile: any BlockFile
        if let index {
            indexFile = index
        } else {
            log("lowers[\(i)]: no gzip index for the TurboOCI target \(target.name): building one from the whole blob")
            let m = MemoryFile(name: target.name + " (gzip index)")
            _ = try GzipIndexWriter.write(gzip: target, to: m, options: GzipIndexOptions(span: 1 << 20))
            indexFile = m
        }
        let gz = try GzipFile(blob: target, indexFile: indexFile)
        let c = global.gzipCacheConfig
        guard c.enable, !digest.isEmpty else { return gz }
        guard c.cacheSizeGB > 0 else {
            throw ImageError.config(path: global.path, detail: "gzipCacheConfig.cacheSizeGB \(c.cacheSizeGB) must be at least 1")
        }
        do {
            let cache = try BlockCache.shared(directory: c.cacheDir, capacity: UInt64(c.cacheSizeGB) << 30, refillSize: c.refillSize)
            return try cache.open(key: digest, upstream: gz)
        } catch is BlockCacheError {
            log("the gzip cache folder \(c.cacheDir) is in use by another process: lowers[\(i)] inflates without it")
            return gz
        }
    }
}
