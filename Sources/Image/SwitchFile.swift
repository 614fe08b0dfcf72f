import BlockIO
import Synchronization

/// A remote layer blob that can switch, once, to a verified local copy of the same bytes
/// (the background download's `overlaybd.commit`). Reads already running on the remote
/// side finish there; every read that starts after the switch goes to the local file.
/// The check is one atomic load: no lock on the read path.
public final class SwitchFile: BlockFile, Sendable {
    public let remote: any BlockFile
    private let local = AtomicLazyReference<LocalFile>()

    public init(remote: any BlockFile) { self.remote = remote }

    public var size: UInt64 { remote.size }
    public var name: String { local.load()?.name ?? remote.name }

    /// Whether reads go to the local copy.
    public var isLocal: Bool { local.load() != nil }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        if let l = local.load() { return try l.read(into: buffer, at: offset) }
        return try remote.read(into: buffer, at: offset)
    }

    /// Sends later reads to `file` (which must hold the same bytes). Only the first call wins.
    @discardableResult
    public func switchTo(_ file: LocalFile) -> Bool {
        guard file.size == remote.size else { return false }
        return local.storeIfNil(file) === file
    }
}
