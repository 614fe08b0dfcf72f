import BlockIO
import VhostUser

/// libFuzzer entry. The bytes are, in order: a descriptor count (low 4 bits), a queue-size
/// exponent and a chain head for the walker, a vhost-user header and payload for the message
/// codec, and what is left is guest memory whose start is the descriptor table. Decoding and
/// walking may fail, never crash; every segment a walk yields lies inside the guest memory,
/// and serving it as a virtio-blk request stays inside it and inside a small disk.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 4 + VhostUserHeader.size else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let fdCount = Int(bytes[0] & 0xf)
    let queueSize = 1 << Int(bytes[1] % 9)
    let head = UInt16(bytes[2]) | UInt16(bytes[3]) << 8
    var at = 4
    // The message codec.
    if let header = try? VhostUserHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[at..<(at + VhostUserHeader.size)])) {
        at += VhostUserHeader.size
        let n = min(Int(header.size), size - at)
        let payload = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])
        at += n
        let fds = [Int32](repeating: -1, count: fdCount)
        if let message = try? VhostUserMessage.decode(header, payload: payload, fds: fds) {
            precondition(message.fds.count == fdCount, "a decoded message must own every descriptor")
            if case let .setMemTable(regions) = message {
                precondition(regions.allSatisfy { $0.size > 0 }, "zero-sized region accepted")
            }
        }
    } else {
        at += VhostUserHeader.size
    }
    // The chain walker over the rest, as guest memory at guest address 0x1000.
    let left = size - at
    guard left >= 16 * queueSize else { return 0 }
    let memoryBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: left, alignment: 16)
    defer { memoryBytes.deallocate() }
    memoryBytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[at...]))
    let memory = GuestMemory.unowned([(guestAddress: 0x1000, userAddress: 0, bytes: memoryBytes)])
    var segments: [GuestSegment] = []
    do {
        try ChainWalker.walk(table: UnsafeRawPointer(memoryBytes.baseAddress!), size: queueSize, head: head, memory: memory,
                             indirect: true, queue: 0, into: &segments)
    } catch { return 0 }
    let lo = UInt(bitPattern: memoryBytes.baseAddress!), hi = lo + UInt(left)
    for s in segments {
        precondition(s.address >= lo && s.address + UInt(s.length) <= hi, "segment outside guest memory")
    }
    precondition(segments.count <= queueSize + VhostUserLimits.maxQueueSize, "chain longer than possible")
    let disk = VirtioBlkDisk(file: MemoryFile(bytes: [UInt8](repeating: 0, count: 64 << 10), name: "fuzz"), readOnly: false, serial: "fuzz")
    _ = disk.handle(segments) { _ in }
    return 0
}
