import Synchronization

/// An in-memory growable file. Thread-safe; meant for tests and small scratch data.
public final class MemoryFile: BlockFile, Sendable {
    private let storage: Mutex<[UInt8]>
    public let name: String
    public let isWritable: Bool

    public init(bytes: [UInt8] = [], name: String = "<memory>", writable: Bool = true) {
        storage = Mutex(bytes)
        self.name = name
        isWritable = writable
    }

    public var size: UInt64 { storage.withLock { UInt64($0.count) } }

    /// A copy of the whole content.
    public var bytes: [UInt8] { storage.withLock { $0 } }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        storage.withLock { data in
            guard offset < UInt64(data.count) else { return 0 }
            let n = min(buffer.count, data.count - Int(offset))
            data.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n)
            }
            return n
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard isWritable else { throw BlockIOError.readOnly(name: name) }
        storage.withLock { data in
            let end = Int(offset) + buffer.count
            if data.count < end { data.append(contentsOf: repeatElement(0, count: end - data.count)) }
            data.withUnsafeMutableBytes { dst in
                if buffer.count > 0 {
                    (dst.baseAddress! + Int(offset)).copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
                }
            }
        }
    }

    public func discard(offset: UInt64, length: UInt64) throws {
        guard isWritable else { throw BlockIOError.readOnly(name: name) }
        storage.withLock { data in
            let lo = min(Int(offset), data.count)
            let hi = min(Int(offset + length), data.count)
            for i in lo..<hi { data[i] = 0 }
        }
    }

    /// Sets the size, zero-filling growth.
    public func truncate(to size: UInt64) {
        storage.withLock { data in
            if Int(size) < data.count { data.removeLast(data.count - Int(size)) }
            else { data.append(contentsOf: repeatElement(0, count: Int(size) - data.count)) }
        }
    }
}
