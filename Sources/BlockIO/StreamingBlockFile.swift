/// A file whose ranges can be delivered in pieces as they arrive (a registry blob), so
/// a reader that only passes the bytes on (a cache writing them to disk) needs no
/// buffer for the whole range and can use each piece before the rest is in.
public protocol StreamingBlockFile: BlockFile {
    /// Hands `[offset, offset + count)` (clipped to `size`) to `deliver` in order, in
    /// pieces; returns the bytes delivered, fewer than asked only at the end of the file.
    /// A throw from `deliver` ends the read with that error; pieces delivered before a
    /// failure are good bytes of the range.
    func stream(at offset: UInt64, count: Int, into deliver: (UnsafeRawBufferPointer) throws -> Void) throws -> Int
}
