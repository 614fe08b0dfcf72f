/// A read-only window `[base, base+length)` of another file, seen as a file of its own.
/// The tar wrapper uses it to expose the payload of a single-file tar.
public final class SliceFile: BlockFile, Sendable {
    public let parent: any BlockFile
    public let base: UInt64
    public let length: UInt64

    public init(parent: any BlockFile, base: UInt64, length: UInt64) throws {
        let parentSize = parent.size
        guard base <= parentSize, length <= parentSize - base else {
            throw BlockIOError.outOfRange(name: parent.name, offset: base, length: length, size: parentSize)
        }
        self.parent = parent
        self.base = base
        self.length = length
    }

    public var size: UInt64 { length }

    public var mappedBytes: UnsafeRawBufferPointer? {
        guard let m = parent.mappedBytes else { return nil }
        return UnsafeRawBufferPointer(rebasing: m[Int(base)..<Int(base + length)])
    }
    public var name: String { parent.name }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < length else { return 0 }
        let n = Int(min(UInt64(buffer.count), length - offset))
        return try parent.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]), at: base + offset)
    }
}
