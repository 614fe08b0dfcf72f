import ArgumentParser
import BlockIO
import Convert
import FoundationEssentials
import Glibc
import Image
import Registry
import Synchronization
import Threading
import ZFile

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert an OCI/Docker image into an obd (overlaybd) image, in userspace, and push it.",
        discussion: """
            SOURCE and TARGET are registry references (host[:port]/repo[:tag][@digest]) or OCI layout \
            folders (oci:PATH[:TAG]). Every platform of an index is converted (attestations skipped). \
            No root, loop device, TCMU or kernel module is needed. The same input converts to the same \
            bytes every time. Credentials come from the global config's credential file, or --username.
            """)

    @Argument(help: "Source image.") var source: String
    @Argument(help: "Target image (ignored with --no-upload).") var target: String
    @Option(name: .long, help: "Virtual disk size in GiB.") var vsize: UInt64 = 64
    @Option(name: .long, help: "ZFile algorithm: lz4 or zstd.") var algorithm = "lz4"
    @Option(name: .long, help: "ZFile block size in KiB (4, 8, 16, 32, 64).") var bs = 4
    @Flag(name: .long, help: "OCI media types (default: docker v2, as ACI's convertor).") var oci = false
    @Flag(name: [.customLong("plain-http"), .customLong("plain")], help: "Plain HTTP to the registries.") var plainHTTP = false
    @Flag(name: .long, help: "Do not verify TLS certificates.") var insecure = false
    @Option(name: [.customShort("u"), .customLong("username")], help: "user[:password] for both registries.") var username: String?
    @Option(name: [.customLong("concurrency"), .customLong("concurrency-limit")], help: "Platform manifests converted at once.") var concurrency = 4
    @Option(name: [.customShort("d"), .customLong("dir"), .customLong("workdir")], help: "Work folder.") var workdir = "tmp_conv"
    @Option(name: .long, help: "Conversion cache folder for layer reuse (default: ~/.cache/obd/convert; 'none' turns it off).") var cacheDir: String?
    @Flag(name: .long, help: "Keep the work folder.") var reserve = false
    @Flag(name: .long, help: "Do not push; with --dump-manifest the result stays in the work folder.") var noUpload = false
    @Flag(name: .long, help: "Write manifest.json and config.json (and index.json) into the work folder.") var dumpManifest = false
    @Flag(name: .long, help: "Progress as JSON lines on stdout.") var json = false
    @Option(name: .long, help: "Global overlaybd.json (credentials).") var config: String?
    @Option(name: .long, help: "Append this binary trace as an acceleration layer (as obd trace attach).") var trace: String?
    @Option(name: .customLong("priority-list"), help: "Append this priority list (one path per line) as an acceleration layer.") var priorityList: String?
    @Flag(name: [.customLong("turbo-oci"), .customLong("turboOCI")],
          help: "TurboOCI: per layer only the ext4 metadata (a turbo layer blob); the original gzip or tar layers stay and are referenced, never converted (mounted into another repository of the same registry).") var turboOCI = false

    func run() throws {
        try runReportingErrors {
            guard let alg = ZFileAlgorithm(name: algorithm) else { throw CLIError("--algorithm: '\(algorithm)' is not lz4 or zstd") }
            guard [4, 8, 16, 32, 64].contains(bs) else { throw CLIError("--bs: \(bs) KiB is not 4, 8, 16, 32 or 64") }
            guard (1...65536).contains(vsize) else { throw CLIError("--vsize: \(vsize) GiB is out of range") }
            guard (1...64).contains(concurrency) else { throw CLIError("--concurrency: \(concurrency) is not between 1 and 64") }
            var options = ConvertOptions()
            options.vsizeGiB = vsize
            options.zfile = ZFileOptions(algorithm: alg, blockSize: bs * 1024, verify: true, threads: 2, overwriteHeader: true)
            options.oci = oci
            options.workdir = workdir
            options.reserve = reserve
            options.dumpManifest = dumpManifest
            options.concurrency = concurrency
            options.turboOCI = turboOCI
            if let cacheDir, cacheDir != "none" {
                options.cacheDir = cacheDir
            } else if cacheDir == nil {
                // The default cache is a convenience: without a writable home, convert without it.
                let home = getenv("HOME").map { String(cString: $0) } ?? "/nonexistent"
                let dir = home + "/.cache/obd/convert"
                if (try? ConversionCache(directory: dir)) != nil {
                    options.cacheDir = dir
                } else {
                    writeStandardError("obd: warning: no conversion cache (\(dir) is not writable); layers are not reused\n")
                }
            }
            if trace != nil && priorityList != nil { throw CLIError("--trace and --priority-list: give one of them") }
            if let path = trace ?? priorityList {
                let bytes = try readTraceFile(path)
                options.acceleration = (bytes, path, trace != nil ? .trace(records: 0) : .priorityList(paths: 0))
            }
            let stores = try ImageStores(plainHTTP: plainHTTP, insecure: insecure, configPath: config, username: username,
                                         references: [source, target])
            let src = try stores.store(source)
            let dst: (any ImageTarget)? = noUpload ? nil : try stores.store(target)
            let tag = try ImageStores.tag(target)
            let bar = ConvertProgress(json: json)
            let converter = try Converter(source: src, target: dst, tag: tag, options: options) { bar.show($0) }
            let started = monotonicSeconds()
            let r = try converter.run()
            let summary = "converted \(source) -> \(noUpload ? "(not uploaded)" : target): \(r.manifests.count) manifest(s), \(r.layersBuilt) layer(s) built, \(r.layersReused) reused, \(r.blobsUploaded) blob(s) uploaded, \(r.blobsMounted) mounted, \(r.blobsPresent) already present, root \(r.rootDigest) in \(String(format2: monotonicSeconds() - started)) s"
            if json {
                print(#"{"event":"summary","root":"\#(r.rootDigest)","manifests":\#(r.manifests.count),"built":\#(r.layersBuilt),"reused":\#(r.layersReused),"uploaded":\#(r.blobsUploaded),"mounted":\#(r.blobsMounted),"present":\#(r.blobsPresent),"layers":[\#(r.layerDigests.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
            } else {
                print(summary)
                for d in r.layerDigests { print("layer \(d)") }
            }
        }
    }

}

/// Per-layer progress: one updating line on a terminal, plain lines otherwise, or JSON.
final class ConvertProgress: Sendable {
    let json: Bool
    let tty = isatty(2) != 0
    /// One event drawn at a time (events come from every layer's thread).
    private let drawing = Mutex(())

    init(json: Bool) { self.json = json }

    func show(_ e: ConvertEvent) {
        drawing.withLock { _ in draw(e) }
    }

    private func draw(_ e: ConvertEvent) {
        if json {
            print(#"{"event":"\#(e.stage.rawValue)","manifest":"\#(e.manifest)","layer":\#(e.layer),"layers":\#(e.layers),"detail":"\#(e.detail)"}"#)
            return
        }
        let what = e.stage == .upload ? "upload \(e.detail)" : e.stage == .done ? "done" : "\(e.manifest) layer \(e.layer + 1)/\(e.layers): \(e.stage.rawValue)"
        if tty {
            let width = 30, filled = e.layers > 0 ? (e.layer * width) / e.layers : width
            writeStandardError("\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + what + "\u{1B}[K" + (e.stage == .done ? "\n" : ""))
        } else {
            writeStandardError("convert: " + what + "\n")
        }
    }
}
