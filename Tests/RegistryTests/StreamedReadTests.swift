import BlockIO
import Glibc
import Registry
import Synchronization
import TestSupport
import Testing

/// Range reads streamed piece by piece (what the cache writes to disk as it arrives),
/// against docker-registry behind the fault proxy: bytes exact across cut bodies, and
/// no byte of a response that does not carry the range asked for reaches the sink.
@Suite("Registry: streamed range reads", .serialized, .enabled(if: LocalRegistry.available || ReferenceFiles.isCI))
struct StreamedReadTests {
    /// Streams `count` bytes at `offset`, collecting the pieces.
    static func streamed(_ blob: RemoteBlob, at offset: UInt64, count: Int) throws -> (bytes: [UInt8], pieces: Int) {
        var out: [UInt8] = []
        var pieces = 0
        let n = try blob.stream(at: offset, count: count) { piece in
            out.append(contentsOf: piece)
            pieces += 1
        }
        #expect(n == out.count)
        return (out, pieces)
    }

    @Test("a streamed read equals the blob's bytes, including at its end, and delivers pieces as they arrive")
    func exact() throws {
        let reg = try LocalRegistry()
        let (bytes, digest) = try RegistryFaultTests.pushed(reg, repository: "obd/stream", size: 3_000_000)
        let blob = try RemoteBlob(client: RegistryFaultTests.client(reg.host), repository: "obd/stream", digest: digest)
        let whole = try Self.streamed(blob, at: 0, count: bytes.count)
        #expect(whole.bytes == bytes)
        #expect(whole.pieces > 1, "a 3 MB body in one piece: not streamed")
        #expect(try Self.streamed(blob, at: 2_999_000, count: 5000).bytes[...] == bytes[2_999_000...])
        #expect(try Self.streamed(blob, at: 3_000_000, count: 10).bytes.isEmpty)
    }

    @Test("a cut body continues after the bytes that arrived; the pieces before the cut are kept")
    func cutBodyContinues() throws {
        let reg = try LocalRegistry()
        let (bytes, digest) = try RegistryFaultTests.pushed(reg, repository: "obd/scut")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        let ranges = RegistryFaultTests.cutTwice(proxy, second: .reset(afterBytes: 7_000))
        let blob = try RemoteBlob(client: RegistryFaultTests.client(proxy.host), repository: "obd/scut", digest: digest,
                                  size: UInt64(bytes.count))
        #expect(try Self.streamed(blob, at: 1000, count: 100_000).bytes[...] == bytes[1000..<101_000])
        #expect(ranges.all == ["bytes=1000-100999", "bytes=21000-100999", "bytes=28000-100999"])
    }

    /// Streams a range that must be refused with a bad-response error whose detail has
    /// `detail`; returns the bytes that reached the sink anyway.
    static func refused(_ blob: RemoteBlob, at offset: UInt64, count: Int, detail: String) -> Int {
        var delivered = 0
        do {
            _ = try blob.stream(at: offset, count: count) { delivered += $0.count }
            Issue.record("the answer for a range from \(offset) was taken")
        } catch let e as RegistryError {
            if case .badResponse(_, let d) = e { #expect(d.contains(detail), "\(d)") } else { Issue.record("\(e)") }
        } catch {
            Issue.record("\(error)")
        }
        return delivered
    }

    @Test("a server that ignores Range: usable from offset 0 only; elsewhere an error and nothing delivered")
    func ignoredRange() throws {
        let reg = try LocalRegistry()
        let (bytes, digest) = try RegistryFaultTests.pushed(reg, repository: "obd/norange")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        proxy.setPolicy { r, _ in r.isBlobRead ? .ignoreRange : .pass }
        let blob = try RemoteBlob(client: RegistryFaultTests.client(proxy.host), repository: "obd/norange", digest: digest,
                                  size: UInt64(bytes.count))
        #expect(try Self.streamed(blob, at: 0, count: 50_000).bytes[...] == bytes[0..<50_000])
        let delivered = Self.refused(blob, at: 1000, count: 50_000, detail: "ignored the Range")
        #expect(delivered == 0, "\(delivered) bytes of the wrong range reached the sink")
    }

    @Test("a 206 for another range: an error, nothing delivered")
    func wrongContentRange() throws {
        let reg = try LocalRegistry()
        let (bytes, digest) = try RegistryFaultTests.pushed(reg, repository: "obd/wrongrange")
        let proxy = try FaultProxy(upstreamPort: reg.port)
        proxy.rewriteResponses(replacing: "bytes 4096-", with: "bytes 4097-")
        let blob = try RemoteBlob(client: RegistryFaultTests.client(proxy.host), repository: "obd/wrongrange", digest: digest,
                                  size: UInt64(bytes.count))
        #expect(Self.refused(blob, at: 4096, count: 8192, detail: "Content-Range") == 0)
        #expect(try Self.streamed(blob, at: 8192, count: 100).bytes[...] == bytes[8192..<8292])
    }

    struct SinkFull: Error, Equatable {}

    @Test("an error thrown by the sink ends the read with that error, not retried")
    func sinkError() throws {
        let reg = try LocalRegistry()
        let (_, digest) = try RegistryFaultTests.pushed(reg, repository: "obd/sinkerr", size: 2_000_000)
        let proxy = try FaultProxy(upstreamPort: reg.port)
        let blob = try RemoteBlob(client: RegistryFaultTests.client(proxy.host), repository: "obd/sinkerr", digest: digest,
                                  size: 2_000_000)
        proxy.resetCounters()
        #expect(throws: SinkFull()) {
            _ = try blob.stream(at: 0, count: 2_000_000) { _ in throw SinkFull() }
        }
        #expect(proxy.blobReads == 1)
    }
}
