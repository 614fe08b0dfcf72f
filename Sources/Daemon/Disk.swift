import BlockIO
import LSMT
import Threading

/// One disk the daemon serves: its spec, the shared lowers it reads, its own upper (if
/// writable), the file the frontend serves and the frontend itself.
public final class Disk: Sendable {
    public let spec: DiskSpec
    public let lowers: SharedLowers
    /// The disk's own upper (writable disks).
    public let upper: WritableLayer?
    /// What the frontend serves: the counters over the overlay (or over the lowers).
    let file: CountingFile
    let frontend: DiskFrontend
    /// Order of addition (the state file keeps it).
    let sequence: Int
    /// The frontend's reads run under it; cancelled on removal, so reads of this disk
    /// blocked on the registry end (other disks over the same lowers keep theirs).
    let cancellation: CancellationToken

    init(spec: DiskSpec, lowers: SharedLowers, upper: WritableLayer?, file: CountingFile, frontend: DiskFrontend, sequence: Int,
         cancellation: CancellationToken) {
        self.cancellation = cancellation
        self.spec = spec
        self.lowers = lowers
        self.upper = upper
        self.file = file
        self.frontend = frontend
        self.sequence = sequence
    }

    /// The disk's size in bytes.
    public var size: UInt64 { file.size }

    /// Stops the frontend, then makes every acknowledged write durable.
    func stop(timeout: Double) throws {
        cancellation.cancel()
        frontend.stop(timeout: timeout)
        try file.flush()
    }
}

/// A disk as the control API lists it.
public struct DiskInfo: Sendable, Equatable, Codable {
    public var id: String
    public var config: String
    public var mode: DiskSpec.Mode
    public var frontend: DiskSpec.Frontend
    public var upper: String?
    /// Virtual size in bytes.
    public var size: UInt64
    /// The config that first opened the lowers this disk shares.
    public var lowers: String

    init(_ d: Disk) {
        id = d.spec.id
        config = d.spec.config
        mode = d.spec.mode
        frontend = d.spec.frontend
        upper = d.spec.upper
        size = d.size
        lowers = d.lowers.origin
    }
}
