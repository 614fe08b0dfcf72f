import BlockIO
import Glibc
import Image
import Testing
import TestSupport

@Suite("Verified downloads")
struct VerifiedDownloadTests {
    @Test func matchingBytesAreRenamedIntoPlace() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var g = SplitMix64(seed: 3)
        let bytes = g.bytes(100_000)
        let d = try VerifiedDownload(finalPath: dir.file("blob"), partialPath: dir.file("blob.partial"),
                                     digest: "sha256:" + Digest.sha256(bytes), size: UInt64(bytes.count), resume: false)
        try d.file.writeBytes(bytes, at: 0)
        try d.finish()
        #expect(access(dir.file("blob.partial"), F_OK) != 0)
        #expect(try LocalFile(path: dir.file("blob")).readBytes(at: 0, count: bytes.count) == bytes)
    }

    @Test func wrongBytesNeverReachTheFinalName() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let bytes = [UInt8](repeating: 1, count: 5000)
        let d = try VerifiedDownload(finalPath: dir.file("blob"), partialPath: dir.file("blob.partial"),
                                     digest: "sha256:" + Digest.sha256(bytes), size: UInt64(bytes.count), resume: false)
        try d.file.writeBytes([UInt8](repeating: 2, count: 5000), at: 0)
        do {
            try d.finish()
            Issue.record("a mismatch was accepted")
        } catch .mismatch(_, let expected, let actual) {
            #expect(expected == "sha256:" + Digest.sha256(bytes))
            #expect(actual == "sha256:" + Digest.sha256([UInt8](repeating: 2, count: 5000)))
        }
        #expect(access(dir.file("blob"), F_OK) != 0)
        #expect(access(dir.file("blob.partial"), F_OK) != 0)
    }

    @Test func resumeKeepsWrittenRuns() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let first = try VerifiedDownload(finalPath: dir.file("b"), partialPath: dir.file("b.part"), digest: "sha256:00", size: 1 << 20, resume: true)
        try first.file.writeBytes([UInt8](repeating: 9, count: 65536), at: 0)
        try first.file.flush()
        let again = try VerifiedDownload(finalPath: dir.file("b"), partialPath: dir.file("b.part"), digest: "sha256:00", size: 1 << 20, resume: true)
        #expect(again.writtenRuns.contains { $0.lowerBound == 0 && $0.upperBound >= 65536 })
        let fresh = try VerifiedDownload(finalPath: dir.file("b"), partialPath: dir.file("b.part"), digest: "sha256:00", size: 1 << 20, resume: false)
        #expect(fresh.writtenRuns.isEmpty)
    }
}
