import ArgumentParser
import Convert
import Glibc
import Threading

/// `obd trace attach SOURCE TRACE TARGET`: ACI's acceleration layer appended to an obd image.
struct TraceAttachCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Append a trace or a priority list to an obd image as an acceleration layer.",
        discussion: """
            SOURCE and TARGET are registry references (host[:port]/repo[:tag][@digest]) or OCI layout \
            folders (oci:PATH[:TAG]), as for obd convert. The new top layer is a tar holding one file \
            'trace' (mode 0444), media type application/vnd.oci.image.layer.v1.tar, with the \
            containerd.io/snapshot/overlaybd/acceleration-layer: yes annotation, as \
            accelerated-container-image writes it; the config gets its diff ID and a history entry. \
            A source whose top layer already is an acceleration layer is refused.
            """)

    @Argument(help: "Source obd image.") var source: String
    @Argument(help: "A binary trace or a priority list (one path per line, at most 64 KiB).") var trace: String
    @Argument(help: "Target image.") var target: String
    @Flag(name: [.customLong("plain-http"), .customLong("plain")], help: "Plain HTTP to the registries.") var plainHTTP = false
    @Flag(name: .long, help: "Do not verify TLS certificates.") var insecure = false
    @Option(name: [.customShort("u"), .customLong("username")], help: "user[:password] for both registries.") var username: String?
    @Option(name: [.customShort("d"), .customLong("workdir")], help: "Work folder (default: a temporary folder).") var workdir: String?
    @Option(name: .long, help: "RFC 3339 time for the history entry and the config's 'created' (default: now).") var created: String?
    @Flag(name: .long, help: "The summary as one JSON line.") var json = false
    @Option(name: .long, help: "Global overlaybd.json (credentials).") var config: String?

    func run() throws {
        try runReportingErrors {
            let bytes = try readTraceFile(trace)
            let stores = try ImageStores(plainHTTP: plainHTTP, insecure: insecure, configPath: config, username: username,
                                         references: [source, target])
            var dir = workdir ?? ""
            var temporary = false
            if dir.isEmpty {
                var template = Array("/tmp/obd-attach-XXXXXX".utf8CString)
                guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                    throw CLIError("cannot make a work folder in /tmp: \(String(cString: strerror(errno)))")
                }
                dir = String(cString: p)
                temporary = true
            }
            defer { if temporary { _ = rmdir(dir) } }
            let attacher = TraceAttacher(source: try stores.store(source), target: try stores.store(target), tag: try ImageStores.tag(target),
                                         trace: bytes, traceName: trace, workdir: dir,
                                         created: created ?? AccelerationLayer.timestamp(Int64(time(nil))))
            let started = monotonicSeconds()
            let r = try attacher.run()
            let what: String
            switch r.content {
            case let .trace(records): what = "trace of \(records) records"
            case let .priorityList(paths): what = "priority list of \(paths) paths"
            }
            if json {
                print(#"{"event":"summary","root":"\#(r.rootDigest)","layer":"\#(r.layerDigest)","size":\#(r.layerSize),"manifests":\#(r.manifests.count),"uploaded":\#(r.blobsUploaded),"mounted":\#(r.blobsMounted),"present":\#(r.blobsPresent)}"#)
            } else {
                print("attached \(what) to \(source) -> \(target): acceleration layer \(r.layerDigest) (\(r.layerSize) bytes), \(r.manifests.count) manifest(s), \(r.blobsUploaded) blob(s) uploaded, \(r.blobsMounted) mounted, \(r.blobsPresent) already present, root \(r.rootDigest) in \(String(format2: monotonicSeconds() - started)) s")
            }
        }
    }
}
