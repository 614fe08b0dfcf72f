import BlockIO
import FoundationEssentials
import Glibc
import Registry
import Threading

/// Where images come from and go to: a registry repository or an OCI layout folder
/// (`oci:<path>[:<tag>]`).
public enum ImageLocation: Sendable, CustomStringConvertible {
    case registry(ImageReference)
    case layout(path: String, tag: String)

    public init(parsing text: String) throws {
        if text.hasPrefix("oci:") {
            let rest = text.dropFirst(4)
            // A tag is what follows the last ':' after the last '/'.
            if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
                self = .layout(path: String(rest[..<colon]), tag: String(rest[rest.index(after: colon)...]))
            } else {
                self = .layout(path: String(rest), tag: "latest")
            }
        } else {
            self = .registry(try ImageReference(parsing: text))
        }
    }

    public var description: String {
        switch self {
        case let .registry(r): return r.description
        case let .layout(p, t): return "oci:\(p):\(t)"
        }
    }
}

/// Reads manifests and blobs from an image location.
public protocol ImageSource: Sendable {
    /// The manifest or index the reference names, with its media type.
    func root() throws -> (bytes: [UInt8], mediaType: String)
    /// A manifest by digest (digest-checked).
    func manifest(_ digest: String) throws -> [UInt8]
    /// A small blob (a config) by digest (digest-checked).
    func small(_ digest: String) throws -> [UInt8]
    /// A layer blob as a file (downloaded into `scratch` when remote; digest checked by the caller).
    func layer(_ descriptor: Descriptor, scratch: String) throws -> any BlockFile
    /// The repository name (for cross-repository mounts), if a registry.
    var repositoryName: String? { get }
    var registryHost: String? { get }
}

/// How a blob reached the target.
public enum BlobTransfer: Sendable, Equatable { case uploaded, present, mounted }

/// Writes manifests and blobs to an image location.
public protocol ImageTarget: Sendable {
    /// Registry host and repository, for remembering where blobs went (nil: a folder).
    var pushLocation: (host: String, repository: String)? { get }
    /// Stores a blob: skipped when the target has it, mounted from `mountFrom` (another
    /// repository of the same registry) when possible, else uploaded.
    func putBlob(_ digest: String, file: LocalFile, mountFrom: (host: String, repository: String)?) throws -> BlobTransfer
    /// Makes a blob available without its bytes when it can: `.present` when the target
    /// has it, `.mounted` after a cross-repository mount from `mountFrom`; nil when the
    /// bytes must be uploaded with `putBlob`.
    func reuseBlob(_ digest: String, mountFrom: (host: String, repository: String)?) throws -> BlobTransfer?
    func putManifest(_ bytes: [UInt8], mediaType: String, tag: String?) throws
}

/// An OCI image layout folder (blobs/sha256/<hex>, index.json, oci-layout).
public struct LayoutStore: ImageSource, ImageTarget {
    public let path: String
    public let tag: String

    public init(path: String, tag: String) {
        self.path = path
        self.tag = tag
    }

    public var repositoryName: String? { nil }
    public var registryHost: String? { nil }
    public var pushLocation: (host: String, repository: String)? { nil }

    func blobPath(_ digest: String) -> String { path + "/blobs/" + digest.replacingFirstColon() }

    public func root() throws -> (bytes: [UInt8], mediaType: String) {
        let index = try JSONValue.parse(try readAll(path + "/index.json"))
        guard let manifests = index["manifests"]?.array else { throw ConvertError.source("\(path)/index.json has no manifests") }
        let pick = manifests.first { $0["annotations"]?["org.opencontainers.image.ref.name"]?.string == tag }
            ?? (manifests.count == 1 && tag == "latest" ? manifests.first : nil)
        guard let d = pick, let digest = d["digest"]?.string else { throw ConvertError.source("oci:\(path): no manifest tagged '\(tag)'") }
        return (try small(digest), d["mediaType"]?.string ?? "")
    }

    public func manifest(_ digest: String) throws -> [UInt8] { try small(digest) }

    public func small(_ digest: String) throws -> [UInt8] {
        let bytes = try readAll(blobPath(digest))
        guard Digest.sha256(of: bytes).description == digest else { throw ConvertError.source("oci:\(path): blob \(digest) does not match its digest") }
        return bytes
    }

    public func layer(_ descriptor: Descriptor, scratch: String) throws -> any BlockFile {
        let f = try LocalFile(path: blobPath(descriptor.digest))
        guard f.size == descriptor.size else {
            throw ConvertError.source("oci:\(path): blob \(descriptor.digest) has \(f.size) bytes, the manifest says \(descriptor.size)")
        }
        return f
    }

    public func putBlob(_ digest: String, file: LocalFile, mountFrom: (host: String, repository: String)?) throws -> BlobTransfer {
        makeDirectories(path + "/blobs/sha256")
        let dst = blobPath(digest)
        if access(dst, F_OK) == 0 { return .present }
        let tmp = dst + ".tmp"
        let out = try LocalFile(path: tmp, mode: .createTruncate)
        try copyFile(file, to: out)
        try out.flush()
        guard rename(tmp, dst) == 0 else { throw ConvertError.target("rename \(tmp): \(BlockIOError.text(errno))") }
        return .uploaded
    }

    public func reuseBlob(_ digest: String, mountFrom: (host: String, repository: String)?) throws -> BlobTransfer? {
        access(blobPath(digest), F_OK) == 0 ? .present : nil
    }

    public func putManifest(_ bytes: [UInt8], mediaType: String, tag: String?) throws {
        makeDirectories(path + "/blobs/sha256")
        let digest = Digest.sha256(of: bytes).description
        try writeAll(blobPath(digest), bytes)
        guard let tag else { return }
        try writeAll(path + "/oci-layout", Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        var manifests: [JSONValue] = []
        if access(path + "/index.json", F_OK) == 0, let old = try? JSONValue.parse(readAll(path + "/index.json")),
           let list = old["manifests"]?.array {
            manifests = list.filter { $0["annotations"]?["org.opencontainers.image.ref.name"]?.string != tag }
        }
        manifests.append(.object(["mediaType": .string(mediaType), "digest": .string(digest), "size": .int(Int64(bytes.count)),
                                  "annotations": .object(["org.opencontainers.image.ref.name": .string(tag)])]))
        let index = JSONValue.object(["schemaVersion": .int(2), "mediaType": .string(MediaType.ociIndex),
                                      "manifests": .array(manifests)])
        try writeAll(path + "/index.json", try index.bytes())
    }
}

/// A registry repository.
public struct RegistryStore: ImageSource, ImageTarget {
    public let client: RegistryClient
    public let reference: ImageReference
    /// Ranged requests in flight per layer download.
    public var parallelism = 4

    public init(client: RegistryClient, reference: ImageReference) {
        self.client = client
        self.reference = reference
    }

    public var repositoryName: String? { reference.repository }
    public var registryHost: String? { reference.host }
    public var pushLocation: (host: String, repository: String)? { (reference.host, reference.repository) }

    public func root() throws -> (bytes: [UInt8], mediaType: String) {
        let m = try client.manifest(repository: reference.repository, reference: reference.reference)
        if let d = reference.digest, Digest.sha256(of: m.bytes).description != d {
            throw ConvertError.source("\(reference): manifest does not match its digest")
        }
        return (m.bytes, m.mediaType)
    }

    public func manifest(_ digest: String) throws -> [UInt8] {
        let m = try client.manifest(repository: reference.repository, reference: digest)
        guard Digest.sha256(of: m.bytes).description == digest else { throw ConvertError.source("\(reference): manifest \(digest) does not match its digest") }
        return m.bytes
    }

    public func small(_ digest: String) throws -> [UInt8] {
        try client.blob(repository: reference.repository, digest: digest)
    }

    public func layer(_ descriptor: Descriptor, scratch: String) throws -> any BlockFile {
        let blob = try RemoteBlob(client: client, repository: reference.repository, digest: descriptor.digest, size: descriptor.size)
        let path = scratch + "/" + descriptor.digest.replacingFirstColon().replacingSlashes() + ".blob"
        let out = try LocalFile(path: path, mode: .createTruncate, map: false)
        try out.truncate(to: descriptor.size)
        try parallelCopy(blob, to: out, threads: parallelism)
        return try LocalFile(path: path)
    }

    public func putBlob(_ digest: String, file: LocalFile, mountFrom: (host: String, repository: String)?) throws -> BlobTransfer {
        let repo = reference.repository
        if try client.hasBlob(repository: repo, digest: digest, push: true) { return .present }
        if let m = mountFrom, m.host == reference.host, m.repository != repo,
           try client.mountBlob(repository: repo, digest: digest, from: m.repository) {
            return .mounted
        }
        try client.uploadBlob(repository: repo, digest: digest, file: file)
        return .uploaded
    }

    public func reuseBlob(_ digest: String, mountFrom: (host: String, repository: String)?) throws -> BlobTransfer? {
        let repo = reference.repository
        if try client.hasBlob(repository: repo, digest: digest, push: true) { return .present }
        if let m = mountFrom, m.host == reference.host, m.repository != repo,
           try client.mountBlob(repository: repo, digest: digest, from: m.repository) {
            return .mounted
        }
        return nil
    }

    public func putManifest(_ bytes: [UInt8], mediaType: String, tag: String?) throws {
        try client.pushManifest(repository: reference.repository, reference: tag ?? Digest.sha256(of: bytes).description,
                                bytes: bytes, mediaType: mediaType)
    }
}

public enum ConvertError: Error, CustomStringConvertible, Equatable {
    case source(String)
    case target(String)
    /// Building a layer failed; `cause` is the error that stopped it.
    case layer(index: Int, digest: String, cause: UnderlyingError)
    case options(String)

    public var description: String {
        switch self {
        case let .source(d): return "source: \(d)"
        case let .target(d): return "target: \(d)"
        case let .layer(i, digest, cause):
            if case let .source(d)? = cause.error as? ConvertError { return "layer \(i) (\(digest)): \(d)" }
            return "layer \(i) (\(digest)): \(cause)"
        case let .options(d): return d
        }
    }
}

// MARK: file helpers

func readAll(_ path: String) throws -> [UInt8] {
    let f = try LocalFile(path: path, map: false)
    return try f.readBytes(at: 0, count: Int(f.size))
}

func writeAll(_ path: String, _ bytes: [UInt8]) throws {
    let tmp = path + ".tmp-\(getpid())"
    let f = try LocalFile(path: tmp, mode: .createTruncate)
    try f.writeBytes(bytes, at: 0)
    try f.flush()
    guard rename(tmp, path) == 0 else { throw ConvertError.target("rename \(tmp): \(BlockIOError.text(errno))") }
}

func copyFile(_ src: any BlockFile, to dst: any BlockFile) throws {
    try src.forEachChunk { piece, off in try dst.write(piece, at: off) }
}

/// Copies `src` into `dst` in 8 MiB ranges with `threads` in flight.
func parallelCopy(_ src: any BlockFile, to dst: LocalFile, threads: Int) throws {
    let chunk: UInt64 = 8 << 20
    try parallelForEach(count: Int((src.size + chunk - 1) / chunk), threads: threads) { j in
        let off = UInt64(j) * chunk
        let n = Int(min(chunk, src.size - off))
        let part = UnsafeMutableRawBufferPointer(rebasing: copyBuffers.value.reserve(n)[0..<n])
        try src.readExactly(into: part, at: off)
        try dst.write(UnsafeRawBufferPointer(part), at: off)
    }
}

/// One transfer buffer per thread.
let copyBuffers = ThreadLocal { ScratchBuffer(capacity: 8 << 20) }

extension String {
    func replacingFirstColon() -> String {
        guard let c = firstIndex(of: ":") else { return self }
        return String(self[..<c]) + "/" + String(self[index(after: c)...])
    }
    func replacingSlashes() -> String { String(map { $0 == "/" ? "_" : $0 }) }
}
