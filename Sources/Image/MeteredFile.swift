import BlockIO
import CoreMetrics

/// A device's disk with per-device metrics: read/write requests and bytes, and failed
/// requests. Frontends wrap the image's stack in it when the metrics exporter is on.
public final class MeteredFile: BlockFile, Sendable {
    public let inner: any BlockFile
    private let readRequests: Counter
    private let readBytes: Counter
    private let writeRequests: Counter
    private let writeBytes: Counter
    private let failures: Counter

    public init(_ inner: any BlockFile, device: String) {
        self.inner = inner
        let d = [("device", device)]
        readRequests = Counter(label: "obd_device_read_requests_total", dimensions: d)
        readBytes = Counter(label: "obd_device_read_bytes_total", dimensions: d)
        writeRequests = Counter(label: "obd_device_write_requests_total", dimensions: d)
        writeBytes = Counter(label: "obd_device_write_bytes_total", dimensions: d)
        failures = Counter(label: "obd_device_failed_requests_total", dimensions: d)
    }

    public var size: UInt64 { inner.size }
    public var name: String { inner.name }
    public var isWritable: Bool { inner.isWritable }
    public var mappedBytes: UnsafeRawBufferPointer? { inner.mappedBytes }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        readRequests.increment()
        do {
            let n = try inner.read(into: buffer, at: offset)
            readBytes.increment(by: n)
            return n
        } catch {
            failures.increment()
            throw error
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        writeRequests.increment()
        do {
            try inner.write(buffer, at: offset)
            writeBytes.increment(by: buffer.count)
        } catch {
            failures.increment()
            throw error
        }
    }

    public func flush() throws { try inner.flush() }
    public func discard(offset: UInt64, length: UInt64) throws { try inner.discard(offset: offset, length: length) }
    public func writeZeroes(offset: UInt64, length: UInt64) throws { try inner.writeZeroes(offset: offset, length: length) }
}
