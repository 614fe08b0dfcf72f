import BlockIO
import CoreMetrics
import Glibc
import Registry
import Synchronization
import Threading

/// Downloads an image's remote lowers whole, in the background, as overlaybd's
/// `download` option does: after `delay` (+ random `delayExtra`) seconds, layer after
/// layer, each blob is copied from the registry into `<dir>/.download` in `blockSize`
/// chunks (chunks already there from an earlier run are kept), throttled to `maxMBps`,
/// verified against its SHA-256 digest, renamed to `<dir>/overlaybd.commit`, and the
/// layer's reads switch to it. A failed or corrupt download is retried (`tryCnt`),
/// the next attempt from scratch.
public final class BackgroundDownload: Sendable {
    let layers: [RemoteLayer]
    let config: DownloadConfig
    private let stopped = Atomic<Bool>(false)
    private let finished = Atomic<Int>(0)
    private let log: @Sendable (String) -> Void

    /// Layers whose dir another download of this process is filling.
    private static let busyDirs = Mutex<Set<String>>([])

    init(layers: [RemoteLayer], config: DownloadConfig, cancellation: CancellationToken? = nil,
         log: @escaping @Sendable (String) -> Void) {
        self.layers = layers
        self.config = config
        self.cancellation = cancellation
        self.log = log
    }

    /// The image's token: the download runs under it.
    private let cancellation: CancellationToken?

    /// Layers done (switched to their local copy) so far.
    public var layersDone: Int { finished.load(ordering: .relaxed) }

    func start() throws {
        try NamedThread.detach(name: "obd-download") { [self] in
            if let cancellation { cancellation.run { run() } } else { run() }
        }
    }

    /// Asks the download to stop at the next chunk (the image is closing).
    public func stop() { stopped.store(true, ordering: .relaxed) }

    private var isStopped: Bool { stopped.load(ordering: .relaxed) }

    /// Sleeps `seconds` in 200 ms steps; false if stopped meanwhile.
    private func pause(_ seconds: Double) -> Bool {
        var left = seconds
        while left > 0 {
            if isStopped { return false }
            usleep(UInt32(min(left, 0.2) * 1e6))
            left -= 0.2
        }
        return !isStopped
    }

    private func run() {
        let extra = config.delayExtra == 0 ? 30 : config.delayExtra
        guard pause(Double(config.delay) + Double(Int.random(in: 0..<extra))) else { return }
        var queue = layers.map { (layer: $0, tries: 0, full: false) }
        while !queue.isEmpty && !isStopped {
            var item = queue.removeFirst()
            do {
                try download(item.layer, full: item.full)
                finished.add(1, ordering: .relaxed)
                DownloadMetrics.shared.layersDone.increment()
            } catch let failure as DownloadFailure {
                item.tries += 1
                item.full = item.full || failure.corrupt
                DownloadMetrics.shared.failures.increment()
                log("background download of \(item.layer.digest) failed (attempt \(item.tries) of \(config.tryCnt)): \(failure.detail)")
                if item.tries < config.tryCnt { queue.append(item) }
            } catch {
                item.tries += 1
                if item.tries < config.tryCnt { queue.append(item) }
            }
            guard pause(0.2) else { return }
        }
    }

    struct DownloadFailure: Error {
        var detail: String
        /// The bytes on disk were wrong: start the next attempt from nothing.
        var corrupt = false
    }

    private func download(_ layer: RemoteLayer, full: Bool) throws {
        let commit = layer.dir + "/overlaybd.commit", partial = layer.dir + "/.download"
        if access(commit, F_OK) == 0 {
            try switchLayer(layer, to: commit)
            return
        }
        guard Self.busyDirs.withLock({ $0.insert(layer.dir).inserted }) else {
            throw DownloadFailure(detail: "another download is filling \(layer.dir)")
        }
        defer { _ = Self.busyDirs.withLock { $0.remove(layer.dir) } }
        makeDirectories(layer.dir)
        let target: VerifiedDownload
        do {
            target = try VerifiedDownload(finalPath: commit, partialPath: partial, digest: layer.digest, size: layer.size, resume: !full)
        } catch {
            throw DownloadFailure(detail: "\(error)")
        }
        let out = target.file
        let have = full ? [] : target.writtenRuns
        let chunk = config.blockSize
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        var throttle = Throttle(mibPerSecond: config.maxMBps)
        var offset: UInt64 = 0
        while offset < layer.size {
            if isStopped { throw DownloadFailure(detail: "stopped") }
            let n = Int(min(UInt64(chunk), layer.size - offset))
            let span = offset..<(offset + UInt64(n))
            if !have.contains(where: { $0.lowerBound <= span.lowerBound && span.upperBound <= $0.upperBound }) {
                var attempt = 0
                while true {
                    do {
                        let target = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
                        let got = try layer.blob.read(into: target, at: offset)
                        guard got == n else { throw DownloadFailure(detail: "short read at \(offset)") }
                        try out.write(UnsafeRawBufferPointer(target), at: offset)
                        break
                    } catch {
                        attempt += 1
                        // Read/write retried twice, as overlaybd does.
                        if attempt > 2 { throw DownloadFailure(detail: "\(error)") }
                    }
                }
                DownloadMetrics.shared.bytes.increment(by: n)
                throttle.consumed(n)
            }
            offset += UInt64(n)
        }
        // Every byte is verified against the digest before the copy may be used.
        do {
            try target.finish()
        } catch .mismatch(_, _, let actual) {
            throw DownloadFailure(detail: "downloaded blob has \(actual), expected \(layer.digest); fetching it again", corrupt: true)
        } catch {
            throw DownloadFailure(detail: "\(error)", corrupt: true)
        }
        try switchLayer(layer, to: commit)
    }

    private func switchLayer(_ layer: RemoteLayer, to path: String) throws {
        do {
            let f = try LocalFile(path: path)
            guard layer.file.switchTo(f) || layer.file.isLocal else {
                throw DownloadFailure(detail: "\(path) has \(f.size) bytes, the layer \(layer.size)")
            }
            log("layer \(layer.digest) now reads from \(path)")
        } catch let e as DownloadFailure {
            throw e
        } catch {
            throw DownloadFailure(detail: "\(error)")
        }
    }
}

/// At most `mibPerSecond` MiB per one-second window (<= 0: no limit).
struct Throttle {
    let limit: Int
    var windowStart = monotonicSeconds()
    var used = 0

    init(mibPerSecond: Int) { limit = mibPerSecond > 0 ? mibPerSecond << 20 : 0 }

    /// Waits until `used` bytes fit the rate since the window started (chunks larger
    /// than a second's worth wait proportionally longer).
    mutating func consumed(_ n: Int) {
        guard limit > 0 else { return }
        used += n
        let due = Double(used) / Double(limit)
        let elapsed = monotonicSeconds() - windowStart
        if due > elapsed { usleep(UInt32(min(due - elapsed, 3600) * 1e6)) }
        if monotonicSeconds() - windowStart >= 1 {
            windowStart = monotonicSeconds()
            used = 0
        }
    }
}

/// Background download metrics.
final class DownloadMetrics: Sendable {
    static let shared = DownloadMetrics()
    let bytes = Counter(label: "obd_download_bytes_total")
    let layersDone = Counter(label: "obd_download_layers_done_total")
    let failures = Counter(label: "obd_download_failures_total")
}
