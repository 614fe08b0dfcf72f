import BlockIO
import Glibc
import Threading

/// How the kernel answers the commands a ring reset takes off the ring.
public enum RingResetLevel: UInt8, Sendable {
    /// SCSI BUSY: the initiator sends the command again (Linux `sd` retries it).
    case retry = 1
    /// CHECK CONDITION: the command fails.
    case fail = 2
}

/// The kernel's controls for a TCMU device whose server went away: the configfs action
/// attributes `block_dev` and `reset_ring` (see formats/TCMU.md).
public protocol RingControl: Sendable {
    /// Stops new commands from entering the ring (the kernel answers them BUSY), after the
    /// kernel has collected every completion already posted in the ring.
    func block() throws
    /// Takes every command off the ring, answers each as `level` says, and sets
    /// `cmd_head` and `cmd_tail` to 0.
    func resetRing(_ level: RingResetLevel) throws
    /// Lets commands into the ring again.
    func unblock() throws
}

/// The configfs action attributes of one tcmu device:
/// `<root>/user_<hba>/<name>/action/{block_dev,reset_ring}`.
public struct ConfigfsRingControl: RingControl {
    public static let defaultRoot = "/sys/kernel/config/target/core"
    public let directory: String

    public init(hba: String, name: String, root: String = ConfigfsRingControl.defaultRoot) {
        directory = "\(root)/user_\(hba)/\(name)"
    }

    public func block() throws { try write("block_dev", "1") }
    public func resetRing(_ level: RingResetLevel) throws { try write("reset_ring", String(level.rawValue)) }
    public func unblock() throws { try write("block_dev", "0") }

    private func write(_ attribute: String, _ value: String) throws {
        try writeControlFile("\(directory)/action/\(attribute)", value)
    }
}

/// Writes `value` to a configfs or sysfs attribute in one write(2).
func writeControlFile(_ path: String, _ value: String) throws {
    let fd = retryingInterrupted { open(path, O_WRONLY | O_CLOEXEC) }
    guard fd >= 0 else { throw TCMUError.kernelControl(path: path, detail: BlockIOError.text(errno)) }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    let n = bytes.withUnsafeBytes { b in retryingInterrupted { Glibc.write(fd, b.baseAddress, b.count) } }
    guard n == bytes.count else {
        throw TCMUError.kernelControl(path: path, detail: n < 0 ? BlockIOError.text(errno) : "short write (\(n) of \(bytes.count) bytes)")
    }
}

/// Taking over the ring of a device that another process served and left (a restart,
/// or a crash). Entries between `cmd_tail` and `cmd_head` cannot be told apart: some the
/// old process never saw, some it was running, and (since commands complete out of
/// order, each answer written over the oldest slot) some it had already answered, whose
/// data buffers the kernel has since freed. Running them again could write stale bytes
/// and answer a command the kernel no longer knows (which marks the ring broken). So the
/// kernel answers them: the device is blocked, the ring reset with BUSY, so the initiator
/// sends each again, and the new ring starts empty at offset 0.
public enum RingTakeover {
    public struct Outcome: Sendable, Equatable {
        /// Commands left in the ring, handed back to the kernel for a retry.
        public var abandoned: Int
        /// Whether the kernel reset the ring.
        public var reset: Bool
        public init(abandoned: Int, reset: Bool) { self.abandoned = abandoned; self.reset = reset }
    }

    /// Blocks the device, resets its ring (BUSY for what was left), resynchronizes `ring`,
    /// calls `start` (which begins serving) and unblocks. Without a working `control`
    /// (no configfs, an old kernel), an empty ring is taken as it is; a ring with commands
    /// left in it is refused, since they could be served only by guessing.
    @discardableResult
    public static func takeOver(ring: CommandRing, control: (any RingControl)?, start: () throws -> Void) throws -> Outcome {
        var blockError: (any Error)?
        if let control {
            do { try control.block() } catch { blockError = error }
        }
        guard let control, blockError == nil else {
            let left = ring.unansweredCommands
            guard left == 0 else {
                throw TCMUError.takeover(detail: "\(left) command(s) are left in the ring and it cannot be reset: \(blockError.map { "\($0)" } ?? "no ring control")")
            }
            try start()
            return Outcome(abandoned: 0, reset: false)
        }
        let left = ring.unansweredCommands
        do {
            try control.resetRing(.retry)
            try ring.resynchronize()
            try start()
        } catch {
            try? control.unblock()
            throw error
        }
        try control.unblock()
        return Outcome(abandoned: left, reset: true)
    }

    /// Fails whatever is left in the ring of a device that cannot be served (its image
    /// does not open any more), so the initiator gets errors instead of waiting forever.
    public static func failLeftovers(control: any RingControl) throws {
        try control.block()
        defer { try? control.unblock() }
        try control.resetRing(.fail)
    }
}
