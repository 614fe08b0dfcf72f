import ArgumentParser
import BlockCache
import BlockIO
import Glibc
import Hashing
import Image
import Registry
import Synchronization
import Threading

struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Download all layer blobs of an image now, in parallel ranged chunks, and verify them (no lazy loading).",
        discussion: """
            With --prefetch-all every layer blob of the image (the host platform's manifest of an \
            index) is fetched into the registry cache of the global config (cacheDir), or with \
            --output-dir into files named by digest, then checked against its SHA-256 digest. \
            Success is reported only when every blob is verified. Credentials come from the \
            global config's credential file. Without --prefetch-all the layers are only listed.
            """)

    @Argument(help: "Image reference: host[:port]/repository[:tag][@digest].") var image: String
    @Flag(name: .long, help: "Download and verify every layer blob.") var prefetchAll = false
    @Option(name: .long, help: "Global overlaybd.json (cache dir, credentials; default: /etc/overlaybd/overlaybd.json if it exists).") var config: String?
    @Option(name: .long, help: "Write blobs to DIR/<digest> instead of the cache.") var outputDir: String?
    @Flag(name: .long, help: "Talk plain HTTP to the registry.") var plainHTTP = false
    @Flag(name: .long, help: "Do not verify the registry's TLS certificate.") var insecure = false
    @Option(name: .long, help: "Ranged requests in flight.") var concurrency = 8
    @Option(name: .customLong("chunk-mib"), help: "Chunk size in MiB.") var chunkMiB = 4

    func run() throws {
        try runReportingErrors {
            guard (1...64).contains(concurrency) else { throw CLIError("--concurrency: \(concurrency) is not between 1 and 64") }
            guard (1...64).contains(chunkMiB) else { throw CLIError("--chunk-mib: \(chunkMiB) is not between 1 and 64") }
            let global = try GlobalConfig.load(path: config)
            let ref = try ImageReference(parsing: image)
            let options = try global.registryOptions(host: ref.host, plainHTTP: plainHTTP, insecure: insecure)
            let client = RegistryClient(host: ref.host, options: options)
            let manifest = try client.imageManifest(repository: ref.repository, reference: ref.reference)
            let total = manifest.layers.reduce(0) { $0 + $1.size }
            guard prefetchAll else {
                for l in manifest.layers { print("\(l.digest)\t\(l.size)\t\(l.mediaType)") }
                return
            }
            for l in manifest.layers where !Digest.isSHA256(l.digest) {
                throw CLIError("layer digest '\(l.digest)' is not sha256:<hex>; cannot verify it")
            }
            let started = monotonicSeconds()
            let targets = try manifest.layers.map { try PullTarget(layer: $0, client: client, repository: ref.repository,
                                                                     global: global, outputDir: outputDir) }
            try fetchAll(targets, total: total)
            // Verify every blob; only then report success.
            var bad: [String] = []
            for t in targets {
                if try t.verify() { continue }
                bad.append(t.layer.digest)
            }
            guard bad.isEmpty else { throw CLIError("digest mismatch (the download was discarded): \(bad.joined(separator: ", "))") }
            let secs = monotonicSeconds() - started
            let mb = Double(total) / 1e6
            print("pulled \(targets.count) layer(s), \(String(format2: mb)) MB in \(String(format2: secs)) s (\(String(format2: mb / max(secs, 1e-6))) MB/s), all verified")
        }
    }

    /// Fetches every chunk of every target with `concurrency` threads, drawing a progress bar.
    /// One chunk buffer per fetching thread.
    static let buffers = ThreadLocal { ScratchBuffer(capacity: 4 << 20) }

    private func fetchAll(_ targets: [PullTarget], total: UInt64) throws {
        let chunk = UInt64(chunkMiB) << 20
        var jobs: [(Int, UInt64)] = []
        for (i, t) in targets.enumerated() {
            var off: UInt64 = 0
            while off < t.layer.size { jobs.append((i, off)); off += chunk }
        }
        let bytes = Atomic<Int>(0)
        let shared = jobs
        let bar = ProgressBar(total: total)
        do {
            try parallelForEach(count: shared.count, threads: concurrency, progress: { bar.draw(UInt64(bytes.load(ordering: .relaxed))) }) { j in
                let (i, off) = shared[j]
                let n = Int(min(chunk, targets[i].layer.size - off))
                let part = UnsafeMutableRawBufferPointer(rebasing: PullCommand.buffers.value.reserve(n)[0..<n])
                do {
                    try targets[i].fetch(into: part, at: off)
                } catch {
                    throw CLIError("\(targets[i].layer.digest): \(error)")
                }
                bytes.add(n, ordering: .relaxed)
            }
        } catch {
            bar.finish(UInt64(bytes.load(ordering: .relaxed)))
            throw error
        }
        bar.finish(UInt64(bytes.load(ordering: .relaxed)))
    }
}

/// Where one pulled blob goes: the cache, or a file in the output dir.
struct PullTarget: Sendable {
    let layer: Descriptor
    let blob: RemoteBlob
    let cached: CachedFile?
    let download: VerifiedDownload?

    init(layer: Descriptor, client: RegistryClient, repository: String, global: GlobalConfig, outputDir: String?) throws {
        self.layer = layer
        blob = try RemoteBlob(client: client, repository: repository, digest: layer.digest, size: layer.size)
        if let outputDir {
            let path = outputDir + "/" + layer.digest
            download = try VerifiedDownload(finalPath: path, partialPath: path + ".partial", digest: layer.digest,
                                            size: layer.size, resume: false)
            cached = nil
        } else {
            let c = global.effectiveCache
            guard c.type == "file", c.sizeGB >= 1 else {
                throw CLIError("\(global.path.isEmpty ? "overlaybd.json" : global.path): the registry cache needs cacheType \"file\" and cacheSizeGB >= 1 (or give --output-dir)")
            }
            let cache = try BlockCache.shared(directory: c.dir, capacity: UInt64(c.sizeGB) << 30, refillSize: c.refillSize)
            cached = try cache.open(key: layer.digest, upstream: blob)
            download = nil
        }
    }

    func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        if let cached {
            try cached.readExactly(into: buffer, at: offset)
        } else if let download {
            try blob.readExactly(into: buffer, at: offset)
            try download.file.write(UnsafeRawBufferPointer(buffer), at: offset)
        }
    }

    /// Verifies what landed: a file is renamed into place only when it matches; a
    /// mismatch discards the bytes (cache entry or partial file).
    func verify() throws -> Bool {
        if let download {
            do { try download.finish() } catch .mismatch { return false } catch { throw CLIError("\(error)") }
            return true
        }
        guard let cached else { return false }
        if try SHA256Stream.digest(of: cached) == layer.digest {
            try cached.flush()
            return true
        }
        cached.invalidate()
        return false
    }
}

/// A one-line progress bar on a terminal; plain periodic lines otherwise.
final class ProgressBar {
    let total: UInt64
    let tty = isatty(2) != 0
    let started = monotonicSeconds()
    var lastPlain = 0.0

    init(total: UInt64) { self.total = total }

    func line(_ done: UInt64) -> String {
        let frac = total == 0 ? 1 : Double(done) / Double(total)
        let width = 30, filled = Int(frac * Double(width))
        let rate = Double(done) / 1e6 / max(monotonicSeconds() - started, 1e-3)
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            + "\(Int(frac * 100))% \(done / 1_000_000)/\(total / 1_000_000) MB \(String(format2: rate)) MB/s"
    }

    func draw(_ done: UInt64) {
        if tty {
            writeStandardError("\r" + line(done))
        } else if monotonicSeconds() - lastPlain >= 2 {
            lastPlain = monotonicSeconds()
            writeStandardError("pull: " + line(done) + "\n")
        }
    }

    func finish(_ done: UInt64) { writeStandardError((tty ? "\r" : "pull: ") + line(done) + "\n") }
}

