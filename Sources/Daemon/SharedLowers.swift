import BlockIO
import Image

/// One opened set of read-only lowers, shared by every disk whose config names them:
/// the layer files (and their registry cache views) are opened once, and each disk
/// reads through the same merged index. Disks hold it through `LowerCache`, which
/// closes it when the last one goes.
public final class SharedLowers: Sendable {
    /// What the lowers are.
    public let key: LowersKey
    /// The image of the lowers alone (no upper).
    public let image: Image
    /// A short name for logs and the API: the config that opened it first.
    public let origin: String

    init(key: LowersKey, image: Image, origin: String) {
        self.key = key
        self.image = image
        self.origin = origin
    }

    /// The merged lowers as one read-only disk.
    public var file: any BlockFile { image.stack }

    /// The disk size the lowers give.
    public var size: UInt64 { image.stack.size }

    /// Whether reads may wait on a registry (frontends then keep them off their own threads).
    public var hasRemoteLowers: Bool { image.hasRemoteLowers }
}
