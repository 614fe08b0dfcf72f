import BlockIO
import Glibc
import TestSupport

/// Gzip inputs made once per test process in a temporary folder: the same data through
/// gzip -1, gzip -9, pigz and Python's gzip module, a multi-member stream, and a tar of
/// part of /usr/share/doc. `plain` is each file's `gzip -dc` output.
final class GzipFixtures: @unchecked Sendable {
    static let shared = GzipFixtures()

    struct Case {
        var name: String
        var gz: String
        var plain: String
    }

    let dir = TemporaryDirectory("obd-gzip")
    private(set) var cases: [Case] = []
    private(set) var failures: [String] = []

    private init() {
        let d = dir.path
        // Mixed data: a tar of documentation (text, already-compressed .gz files), then
        // seeded random bytes and long zero runs, so spans see all three block types.
        let docs = (try? listDocs()) ?? []
        sh("tar -cf \(d)/docs.tar -C /usr/share/doc \(docs.joined(separator: " ")) 2>/dev/null")
        var rng = SplitMix64(seed: 12)
        var mixed = rng.bytes(1 << 20) + [UInt8](repeating: 0, count: 3 << 20)
        mixed += Array("the quick brown fox jumps over the lazy dog\n".utf8).repeated(40_000)
        write(d + "/mixed.bin", mixed)
        sh("cat \(d)/docs.tar >> \(d)/mixed.bin")
        for level in ["1", "9"] {
            add("gzip-\(level)", "gzip -\(level) -c \(d)/mixed.bin > \(d)/gzip-\(level).gz")
        }
        if access("/usr/bin/pigz", X_OK) == 0 {
            add("pigz", "pigz -c -p 2 \(d)/mixed.bin > \(d)/pigz.gz")
        } else {
            failures.append("pigz is not installed (tools/install-deps.sh installs it)")
        }
        add("python", "python3 -c 'import gzip,sys; sys.stdout.buffer.write(gzip.compress(open(sys.argv[1],\"rb\").read(), 6, mtime=0))' \(d)/mixed.bin > \(d)/python.gz")
        // Several members of different makers, one of them empty.
        sh("head -c 1500000 \(d)/mixed.bin | gzip -6 > \(d)/multi.gz; : | gzip >> \(d)/multi.gz")
        sh("tail -c +1500001 \(d)/mixed.bin | head -c 2000000 | pigz -p 2 >> \(d)/multi.gz || true")
        sh("tail -c +3500001 \(d)/mixed.bin | python3 -c 'import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read(), 9))' >> \(d)/multi.gz")
        add("multi", nil)
        add("docs-tar", "gzip -6 -c \(d)/docs.tar > \(d)/docs-tar.gz")
        // The Debian minbase layer of the convert tests' set-up step, when present.
        let home = String(cString: getenv("HOME") ?? strdup("/root"))
        let minbase = run(["/bin/sh", "-c", "ls \(home)/.cache/obd-test/debian-minbase/*.tar.gz \(home)/.cache/obd-test/debian-minbase/*/*.tar.gz 2>/dev/null | head -1"]).out
            .split(separator: "\n").first.map(String.init)
        if let minbase { add("debian-minbase", nil, gz: minbase) }
    }

    private func listDocs() throws -> [String] {
        // Directories in name order until about 12 MB.
        let out = run(["/bin/sh", "-c", "cd /usr/share/doc && du -s -k * 2>/dev/null"]).out
        var total = 0
        var names = [String]()
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            guard parts.count == 2, let kb = Int(parts[0]), !parts[1].contains(" ") else { continue }
            if total + kb > 12_000 { continue }
            total += kb
            names.append(String(parts[1]))
        }
        return names
    }

    /// Runs `command` (if any), which writes `gz`, and records the case with its
    /// `gzip -dc` output.
    private func add(_ name: String, _ command: String?, gz: String? = nil) {
        let path = gz ?? "\(dir.path)/\(name).gz"
        if let command { sh(command) }
        let plain = "\(dir.path)/\(name).plain"
        sh("gzip -dc \(path) > \(plain)")
        cases.append(Case(name: name, gz: path, plain: plain))
    }

    @discardableResult
    private func sh(_ command: String) -> Int32 {
        let r = run(["/bin/sh", "-c", command])
        if r.status != 0 { failures.append("\(command): \(r.status) \(r.err)") }
        return r.status
    }

    private func write(_ path: String, _ bytes: [UInt8]) {
        let f = try! LocalFile(path: path, mode: .createTruncate)
        try! f.writeBytes(bytes, at: 0)
    }
}

extension Array {
    func repeated(_ n: Int) -> [Element] { (0..<n).flatMap { _ in self } }
}


/// The whole content of a local file.
func contents(_ path: String) throws -> [UInt8] {
    let f = try LocalFile(path: path)
    return try f.readBytes(at: 0, count: Int(f.size))
}
