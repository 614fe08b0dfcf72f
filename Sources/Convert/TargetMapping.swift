import LSMT

/// Where the metadata-only apply registers file data that stays in the original layer:
/// `length` bytes of the disk at `deviceOffset` read the target's uncompressed tar stream
/// from `targetOffset` (all three multiples of 512). The TurboOCI writable warp layer
/// (`WritableWarpLayer` in LSMT) is one; tests use a recorder or a copier. Later mappings
/// of the same range override earlier ones, and so do later data writes to the disk.
public protocol TargetMapping: AnyObject {
    func mapTarget(deviceOffset: UInt64, length: UInt64, targetOffset: UInt64) throws
}

/// The writable warp layer records each mapping as tag-1 index entries.
extension WritableWarpLayer: TargetMapping {}
