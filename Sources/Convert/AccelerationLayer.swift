import CArchive
import FoundationEssentials
import Glibc
import Registry
import Trace

/// accelerated-container-image's *acceleration layer*: an extra top layer holding a trace
/// (or a priority list) that a snapshotter with `accelerationLayer: true` does not mount
/// but replays. The blob is a tar with one regular file `trace` (mode 0444, owner 0:0,
/// time 0), media type `application/vnd.oci.image.layer.v1.tar` in an OCI manifest (ACI
/// writes that type into docker v2 manifests too, which containers/image tools such as
/// skopeo and podman refuse to parse; obd writes the docker name of the same uncompressed
/// tar, `application/vnd.docker.image.rootfs.diff.tar`, there; the snapshotter knows the
/// layer by its annotation, not its type), and annotations version `0.1.0`, blob-digest, blob-size,
/// `acceleration-layer: yes` and, when the old top layer has one, its `blob-fs-type`.
/// The config gets the blob's digest as one more diff ID (the tar is uncompressed), a
/// history entry `{created, created_by: "Acceleration Layer"}` put first (as ACI's
/// `createImageWithAccelLayer` does) and `created` set to the same time.
public enum AccelerationLayer {
    public static let mediaType = MediaType.ociLayerTar
    /// The same uncompressed tar in a docker v2 manifest.
    public static let dockerMediaType = MediaType.dockerLayerTar

    /// The layer's media type in a manifest of `manifestType`.
    public static func mediaType(inManifest manifestType: String?) -> String {
        manifestType == MediaType.dockerManifest ? dockerMediaType : mediaType
    }
    public static let annotation = "containerd.io/snapshot/overlaybd/acceleration-layer"
    public static let blobDigestKey = "containerd.io/snapshot/overlaybd/blob-digest"
    public static let blobSizeKey = "containerd.io/snapshot/overlaybd/blob-size"
    public static let versionKey = "containerd.io/snapshot/overlaybd/version"
    public static let fsTypeKey = "containerd.io/snapshot/overlaybd/blob-fs-type"
    public static let historyText = "Acceleration Layer"

    /// What the `trace` file holds.
    public enum Content: Sendable, Equatable {
        /// overlaybd's binary trace, with this many records.
        case trace(records: Int)
        /// A priority list with this many usable paths.
        case priorityList(paths: Int)
    }

    /// Checks `bytes` (named `path` in errors) as the content of an acceleration layer: a
    /// binary trace that passes every check of formats/Trace.md, or a priority list of at
    /// most 64 KiB with at least one usable path. `expect` insists on one of the two.
    public static func check(_ bytes: [UInt8], path: String, expect: Content? = nil) throws -> Content {
        guard !bytes.isEmpty else { throw ConvertError.options("\(path): empty (a trace or a priority list is needed)") }
        let content: Content
        if TraceFormat.hasMagic(bytes) {
            do { content = .trace(records: try TraceFormat.decode(bytes, path: path).count) } catch {
                throw ConvertError.options("\(error)")
            }
        } else {
            let list: PriorityList
            do { list = try PriorityList(bytes: bytes, path: path) } catch { throw ConvertError.options("\(error)") }
            guard !list.entries.isEmpty else {
                let why = list.skipped.first.map { " (line \($0.line): \($0.reason))" } ?? ""
                throw ConvertError.options("\(path): not a binary trace (no trace magic) and no usable path as a priority list\(why)")
            }
            content = .priorityList(paths: list.entries.count)
        }
        switch (expect, content) {
        case (.trace?, .priorityList):
            throw ConvertError.options("\(path): not a binary trace (no trace magic); give a priority list with --priority-list")
        case (.priorityList?, .trace):
            throw ConvertError.options("\(path): a binary trace, not a priority list; give it with --trace")
        default:
            return content
        }
    }

    /// The layer blob: a ustar archive holding `trace` (mode 0444, uid/gid 0, mtime 0),
    /// 512-byte blocks, two zero blocks at the end. The same bytes give the same blob.
    public static func blob(trace: [UInt8]) throws -> [UInt8] {
        guard let a = archive_write_new() else { throw ConvertError.target("libarchive: out of memory") }
        defer { archive_write_free(a) }
        let padded = (trace.count + 511) / 512 * 512
        var out = [UInt8](repeating: 0, count: 512 + padded + 1024 + 512)
        var used = 0
        func ok(_ rc: Int32, _ what: String) throws {
            guard rc == ARCHIVE_OK else {
                throw ConvertError.target("acceleration layer tar: \(what): \(archive_error_string(a).map { String(cString: $0) } ?? "unknown error")")
            }
        }
        try ok(archive_write_set_format_ustar(a), "format")
        try ok(archive_write_set_bytes_per_block(a, 512), "block size")
        try ok(archive_write_set_bytes_in_last_block(a, 1), "last block")
        try out.withUnsafeMutableBytes { buf in
            try ok(archive_write_open_memory(a, buf.baseAddress, buf.count, &used), "open")
            guard let e = archive_entry_new() else { throw ConvertError.target("libarchive: out of memory") }
            defer { archive_entry_free(e) }
            archive_entry_set_pathname(e, "trace")
            archive_entry_set_filetype(e, 0o100000)  // AE_IFREG
            archive_entry_set_perm(e, 0o444)
            archive_entry_set_size(e, la_int64_t(trace.count))
            archive_entry_set_uid(e, 0)
            archive_entry_set_gid(e, 0)
            archive_entry_set_mtime(e, 0, 0)
            try ok(archive_write_header(a, e), "header")
            let n = trace.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) }
            guard n == trace.count else { throw ConvertError.target("acceleration layer tar: data: wrote \(n) of \(trace.count) bytes") }
            try ok(archive_write_close(a), "close")
        }
        return Array(out.prefix(used))
    }

    /// Whether the layer descriptor `layer` (JSON) is an acceleration layer.
    public static func isAccelerationLayer(_ layer: JSONValue?) -> Bool {
        layer?["annotations"]?[annotation]?.string == "yes"
    }

    /// An RFC 3339 UTC time (seconds) for `created`.
    public static func timestamp(_ seconds: Int64) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }

    /// Appends the acceleration layer (`digest`, `size`) to a manifest and its config, as
    /// ACI does; `manifestName` names the manifest in errors. The manifest's config
    /// descriptor is not touched here (it needs the final config bytes).
    /// - Throws: when the top layer already is an acceleration layer, or is not an obd
    ///   (overlaybd) layer (no blob-digest annotation), or the config has no diff IDs.
    public static func append(manifest: inout JSONValue, config: inout JSONValue, digest: String, size: UInt64,
                              created: String, manifestName: String) throws {
        guard var layers = manifest["layers"]?.array, let top = layers.last else {
            throw ConvertError.source("\(manifestName): the manifest has no layers")
        }
        guard !isAccelerationLayer(top) else {
            throw ConvertError.source("\(manifestName): the top layer already is an acceleration layer (\(top["digest"]?.string ?? "?"))")
        }
        guard top["annotations"]?[blobDigestKey]?.string != nil else {
            throw ConvertError.source("\(manifestName): the top layer has no \(blobDigestKey) annotation: not an obd (overlaybd) image; convert it first")
        }
        guard var diffIDs = config["rootfs"]?["diff_ids"]?.array else {
            throw ConvertError.source("\(manifestName): the config has no rootfs.diff_ids")
        }
        var annotations: [String: JSONValue] = [
            versionKey: .string("0.1.0"),
            blobDigestKey: .string(digest),
            blobSizeKey: .string("\(size)"),
            annotation: .string("yes"),
        ]
        if let fs = top["annotations"]?[fsTypeKey]?.string { annotations[fsTypeKey] = .string(fs) }
        layers.append(.object(["mediaType": .string(mediaType(inManifest: manifest["mediaType"]?.string)), "digest": .string(digest), "size": .int(Int64(size)),
                               "annotations": .object(annotations)]))
        manifest["layers"] = .array(layers)
        diffIDs.append(.string(digest))
        config["rootfs"]?["diff_ids"] = .array(diffIDs)
        let entry = JSONValue.object(["created": .string(created), "created_by": .string(historyText)])
        config["history"] = .array([entry] + (config["history"]?.array ?? []))
        config["created"] = .string(created)
    }

    /// `sha256:<hex>` of bytes.
    static func digest(_ bytes: [UInt8]) -> String { Digest.sha256(of: bytes).description }
}
