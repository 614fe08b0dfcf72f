import FoundationEssentials

/// An OCI / Docker v2 content descriptor.
public struct Descriptor: Sendable, Equatable, Codable {
    public var mediaType: String
    public var digest: String
    public var size: UInt64
    public var annotations: [String: String]?
    public var platform: Platform?

    public struct Platform: Sendable, Equatable, Codable {
        public var os: String
        public var architecture: String
        public var variant: String?
    }

    public init(mediaType: String, digest: String, size: UInt64) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
    }
}

/// One platform's image manifest: its config and layers (bottom to top).
public struct ImageManifest: Sendable, Equatable {
    public var digest: String?
    public var mediaType: String
    public var config: Descriptor
    public var layers: [Descriptor]
    public var bytes: [UInt8]

    public static let indexTypes = MediaType.indexTypes

    /// The platform this process runs on, in OCI terms.
    public static var hostPlatform: (os: String, architecture: String) {
        #if arch(x86_64)
        return ("linux", "amd64")
        #elseif arch(arm64)
        return ("linux", "arm64")
        #else
        return ("linux", "unknown")
        #endif
    }
}

extension RegistryClient {
    /// Resolves `reference` (tag or digest) in `repository` to one platform's manifest,
    /// choosing from an index by `os`/`architecture` (attestation entries are skipped).
    /// The manifest's digest is checked when the reference is a digest.
    public func imageManifest(repository: String, reference: String,
                              platform: (os: String, architecture: String) = ImageManifest.hostPlatform) throws -> ImageManifest {
        struct Raw: Decodable {
            var mediaType: String?
            var config: Descriptor?
            var layers: [Descriptor]?
            var manifests: [Descriptor]?
        }
        var ref = reference
        for _ in 0..<2 {
            let url = base + repository + "/manifests/" + ref
            let m = try manifest(repository: repository, reference: ref)
            if let d = try? Digest(parsing: ref), !d.matches(m.bytes) {
                throw RegistryError.badResponse(url: url, detail: "manifest bytes do not match the digest \(ref)")
            }
            let raw: Raw
            do { raw = try JSONDecoder().decode(Raw.self, from: Data(m.bytes)) } catch {
                throw RegistryError.badResponse(url: url, detail: "manifest is not valid JSON")
            }
            let type = raw.mediaType ?? m.mediaType
            if let list = raw.manifests, ImageManifest.indexTypes.contains(type) || raw.layers == nil {
                let candidates = list.filter {
                    $0.platform?.os == platform.os && $0.platform?.architecture == platform.architecture
                        && $0.annotations?["vnd.docker.reference.type"] != "attestation-manifest"
                }
                guard let pick = candidates.first else {
                    throw RegistryError.badResponse(url: url, detail: "the index has no \(platform.os)/\(platform.architecture) manifest")
                }
                ref = pick.digest
                continue
            }
            guard let config = raw.config, let layers = raw.layers else {
                throw RegistryError.badResponse(url: url, detail: "not an image manifest (no config/layers)")
            }
            return ImageManifest(digest: m.digest ?? (Digest.isWellFormed(ref) ? ref : nil), mediaType: type,
                                 config: config, layers: layers, bytes: m.bytes)
        }
        throw RegistryError.badResponse(url: repository, detail: "an index inside an index")
    }
}
