/// The deterministic write/discard sequence the crash test runs in a child process
/// and replays in the test to know what the disk must hold.
public enum CrashWorkload {
    /// Virtual size of the crash-test disk.
    public static let diskSize: UInt64 = 8 << 20
    /// The child flushes after every this many operations.
    public static let flushEvery = 8

    public struct Operation: Sendable {
        public var discard: Bool
        public var offset: UInt64
        public var length: Int
        public var dataSeed: UInt64

        /// The bytes this operation leaves on the disk.
        public func bytes() -> [UInt8] {
            if discard { return [UInt8](repeating: 0, count: length) }
            var g = SplitMix64(seed: dataSeed)
            return g.bytes(length)
        }

        /// Applies the operation to an in-memory model of the disk.
        public func apply(to disk: inout [UInt8]) {
            let b = bytes()
            disk.replaceSubrange(Int(offset)..<(Int(offset) + length), with: b)
        }
    }

    /// Operation `index` of the sequence for `seed`.
    public static func operation(seed: UInt64, index: Int) -> Operation {
        var g = SplitMix64(seed: seed &* 0x1000_0001 &+ UInt64(index))
        let sectors = Int(g.next() % 256) + 1
        let maxStart = diskSize / 512 - UInt64(sectors)
        let start = g.next() % (maxStart + 1)
        let discard = g.next() % 10 == 0
        return Operation(discard: discard, offset: start * 512, length: sectors * 512, dataSeed: g.next())
    }
}
