import BlockIO
import Glibc
import Gzip
import Testing
import TestSupport

@Suite("GzipWriter")
struct GzipWriterTests {
    @Test("gzip -dc gives back what was written (empty, small, several MiB in odd pieces); the same input gives the same bytes; the header has no name and mtime 0")
    func roundTrip() throws {
        let dir = TemporaryDirectory("obd-gzwriter")
        defer { dir.remove() }
        var rng = SystemRandomNumberGenerator()
        let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog\n", count: 40_000).utf8)
        let noise = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for (k, input) in [[], Array("x".utf8), text + noise].enumerated() {
            var digests: [[UInt8]] = []
            for pass in 0..<2 {
                let path = dir.file("\(k)-\(pass).gz")
                let out = try LocalFile(path: path, mode: .createTruncate)
                let w = try GzipWriter(output: out)
                var at = 0
                var step = 1
                while at < input.count {
                    let n = min(step, input.count - at)
                    try w.write(Array(input[at..<(at + n)]))
                    at += n
                    step = step * 3 + 7
                }
                let end = try w.finish()
                #expect(end == out.size)
                let bytes = try out.readBytes(at: 0, count: Int(out.size))
                #expect(bytes[0] == 0x1F && bytes[1] == 0x8B && bytes[3] == 0 && bytes[4..<8].allSatisfy { $0 == 0 })
                digests.append(bytes)
                let r = run(["/bin/sh", "-c", "gzip -dc \(path) > \(path).out"])
                #expect(r.status == 0, "\(r.err)")
                let back = try LocalFile(path: path + ".out")
                #expect(try back.readBytes(at: 0, count: Int(back.size)) == input)
            }
            #expect(digests[0] == digests[1])
        }
    }
}
