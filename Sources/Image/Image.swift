import BlockIO
import Glibc
import LSMT
import Registry
import Synchronization
import Threading
import Trace

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

    /// Hears every read of the lowers' layer files while a recording runs.
    public let traceRecorder: TraceRecorder
    /// The lowers' decompressed layer files as the stack reads them, bottom to top: the
    /// index here is a trace record's layer index. An acceleration layer is not among them.
    public let lowerFiles: [any BlockFile]
    /// The trace replay started when the image opened, if the config asked for one.
    public let prefetcher: Prefetcher?
    /// The token of this image's own work (frontends run its reads under it, and so do
    /// its prefetch and download): cancelled when the image goes away.
    public let cancellation: CancellationToken
    private let recording = Mutex<TraceRecordSession?>(nil)
    private let log: @Sendable (String) -> Void

    /// Whether any lower is read from a registry (reads may then block on the network).
    public var hasRemoteLowers: Bool { !remoteLayers.isEmpty }

    /// Opens the image described by the config at `configPath`.
    /// - Parameters:
    ///   - writable: open the upper for writing (otherwise it is only read).
    ///   - log: receives background-download, trace recording and prefetch messages.
    public static func open(configPath: String, global: GlobalConfig = GlobalConfig(), writable: Bool = false,
                            log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Image {
        try Image(config: ImageConfig.load(path: configPath), global: global, writable: writable, log: log)
    }

    public init(config: ImageConfig, global: GlobalConfig = GlobalConfig(), writable: Bool = false,
                log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.config = config
        self.global = global
        let cancellation = CancellationToken()
        self.cancellation = cancellation
        var layers: [ReadOnlyLayer] = []
        var paths: [String] = []
        var remotes: [RemoteLayer] = []
        var sources: RemoteSources? = RemoteSources(global: global, log: log)
        // Every lower's decompressed layer file reports its reads to the recorder (idle
        // unless a recording runs). An acceleration layer (the top lower) is no disk layer.
        let recorder = TraceRecorder()
        let trace = { (i: Int) in { @Sendable (f: any BlockFile) -> any BlockFile in TracingFile(f, layerIndex: UInt32(i), recorder: recorder) } }
        let diskLowers = config.accelerationLayer ? Array(config.lowers.dropLast()) : config.lowers
        for (i, lower) in diskLowers.enumerated() {
            if Image.isTurbo(lower) {
                let t = try Image.openTurbo(lower, index: i, config: config, global: global, sources: &sources, log: log, decorate: trace(i))
                layers.append(t.layer)
                paths.append(t.path)
                remotes += t.remotes
                continue
            }
            if let path = try Image.locate(lower, index: i, config: config) {
                do {
                    layers.append(try LayerOpener.open(path: path, ioEngine: global.ioEngine, decorate: trace(i)))
                } catch {
                    throw ImageError.layer(path: path, detail: "lowers[\(i)]: \(Image.strip(error, path))")
                }
                paths.append(path)
                continue
            }
            let blobURL = try Image.withRemoteBlob(lower, index: i, config: config, global: global, sources: &sources, log: log) { blob, cached in
                let remote = RemoteLayer(digest: lower.digest, dir: lower.dir.isEmpty ? "" : config.resolve(lower.dir),
                                         blob: blob, cached: cached)
                layers.append(try LayerOpener.open(file: remote.file, decorate: trace(i)))
                remotes.append(remote)
            }
            paths.append(blobURL)
        }
        var mode = TraceMode.none
        if config.accelerationLayer, let top = config.lowers.last {
            mode = try Image.accelerationTrace(top, index: config.lowers.count - 1, config: config, global: global, sources: &sources, log: log)
        } else if !config.recordTracePath.isEmpty {
            mode = try TraceSetup.mode(recordTracePath: config.recordTracePath, config: config, log: log)
        }
        var upper: WritableLayer?
        if !config.upper.target.isEmpty || !config.upper.gzipIndex.isEmpty {
            throw ImageError.config(path: config.path, detail: "'upper.target'/'upper.gzipIndex': a TurboOCI warp upper is written by obd apply --turbo-oci, not opened as an image's upper")
        }
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
        if case .record = mode, dl.enable && !targets.isEmpty {
            log("background download is off while a trace is recorded (as in overlaybd)")
            download = nil
        } else if dl.enable && !targets.isEmpty {
            let d = BackgroundDownload(layers: targets, config: dl, cancellation: cancellation, log: log)
            download = d
            try d.start()
        } else {
            download = nil
        }
        traceRecorder = recorder
        lowerFiles = layers.map(\.file)
        self.log = log
        switch mode {
        case .none:
            prefetcher = nil
        case let .record(path):
            prefetcher = nil
            do {
                try startRecording(path: path)
            } catch {
                throw ImageError.config(path: config.path, detail: "recordTracePath: \(error)")
            }
        case let .replay(records, source):
            let p = Prefetcher(records: records, source: source, files: lowerFiles.map { CancellableFile($0, token: cancellation) },
                               config: global.prefetchConfig, log: log)
            prefetcher = p
            do { try p.start() } catch { log("prefetch from \(source) cannot start: \(error)") }
        case let .priorityList(list, source):
            // The list names files of the ext4 in the merged lowers (the upper is not read).
            let disk = try LayerStack(lowers: layers, name: config.path + " (lowers)")
            let p = Prefetcher(priorityList: list, source: source, disk: CancellableFile(disk, token: cancellation),
                               config: global.prefetchConfig, log: log)
            prefetcher = p
            do { try p.start() } catch { log("prefetch from \(source) cannot start: \(error)") }
        }
    }

    deinit {
        prefetcher?.stop()
        _ = try? stopRecording()
        download?.stop()
    }

    /// The running (or last) trace recording, if any.
    public var traceRecording: TraceRecordSession? { recording.withLock { $0 } }

    /// Starts recording the lowers' reads into the trace at `path`, with overlaybd's
    /// protocol (`<path>.lock` now; the trace and `<path>.ok` once the lock is removed,
    /// `stopRecording` is called or the image closes). Opening with an empty file at
    /// `recordTracePath` does this at once. One recording at a time.
    public func startRecording(path: String, pollInterval: Double = 1) throws(TraceError) {
        try recording.withLock { (current: inout TraceRecordSession?) throws(TraceError) in
            if let c = current, !c.isFinished { throw .alreadyRecording(path: path, running: c.path) }
            current = try TraceRecordSession.start(path: path, recorder: traceRecorder, pollInterval: pollInterval, log: log)
        }
    }

    /// Ends the running recording now: writes the trace, removes the lock, creates `.ok`.
    /// Returns what was written (also for a recording that had already ended), nil if none ever ran.
    @discardableResult
    public func stopRecording() throws(TraceError) -> TraceRecordSummary? {
        guard let s = recording.withLock({ $0 }) else { return nil }
        return try s.stop()
    }

    /// Ends this image's registry traffic: its reads (run under `cancellation`) that wait
    /// out an outage (`blockOnOutage`), back off or sit in a transfer fail within about
    /// a second, and so do later ones that need the network. Other images reading the
    /// same cached blobs are not affected. A device being removed calls this before it
    /// waits for its commands, so removal never waits for the network to come back.
    public func cancelFetches() { cancellation.cancel() }

    /// Before the image goes away (device removal, process exit): stops the trace replay
    /// (joining its threads), ends a running recording (trace and `.ok` written), stops
    /// the background download and makes the cache's presence maps durable, so a restart finds every
    /// fetched range. Writes to the upper are flushed by `stack.flush()`.
    public func close() {
        cancelFetches()
        prefetcher?.stop()
        do { try stopRecording() } catch { log("trace recording: \(error)") }
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
