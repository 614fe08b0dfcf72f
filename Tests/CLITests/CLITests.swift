import Testing
import TestSupport

/// The obd command line, run as a user runs it.
@Suite("obd CLI", .serialized)
struct CLITests {
    let obd = builtProduct("obd")
    static let u1 = "11111111-2222-3333-4444-555555555501"
    static let u2 = "11111111-2222-3333-4444-555555555502"

    func sameBytes(_ a: String, _ b: String) -> Bool { run(["/usr/bin/cmp", "-s", a, b]).status == 0 }

    @Test("obd zfile reproduces every stored overlaybd ZFile and decompresses it back", .enabled(if: ReferenceFiles.shouldRun),
          arguments: [("zfile-lz4-bs4.zfile", [String]()), ("zfile-zstd-bs4.zfile", ["--algorithm", "zstd"]),
                      ("zfile-zstd-bs16.zfile", ["--algorithm", "zstd", "--bs", "16"]), ("zfile-lz4-bs32.zfile", ["--bs", "32"]),
                      ("zfile-lz4-bs64.zfile", ["--bs", "64", "--allow-oversized-blocks"]), ("zfile-lz4-bs4-nocrc.zfile", ["--no-crc"])])
    func zfile(name: String, flags: [String]) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let input = try ReferenceFiles.path("zfile/zfile-input.bin")
        let r = run([obd, "zfile"] + flags + ["--compress-threads", "2", input, dir.file("out")])
        #expect(r.status == 0, "\(r.err)")
        #expect(sameBytes(dir.file("out"), try ReferenceFiles.path("zfile/" + name)))
        #expect(run([obd, "zfile", "-x", try ReferenceFiles.path("zfile/" + name), dir.file("back")]).status == 0)
        #expect(sameBytes(dir.file("back"), input))
        let v = run([obd, "zfile", "--verify", try ReferenceFiles.path("zfile/" + name)])
        #expect(v.status == 0 && v.out.contains("valid ZFile"))
    }

    @Test("64 KiB blocks that overlaybd cannot read: refused with a clear error", .enabled(if: ReferenceFiles.shouldRun))
    func oversized() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let r = run([obd, "zfile", "--bs", "64", try ReferenceFiles.path("zfile/zfile-input.bin"), dir.file("out")])
        #expect(r.status == 1)
        #expect(r.err.contains("65536 bytes overlaybd's reader accepts"))
        #expect(r.err.split(separator: "\n").count == 1)
        #expect(access(dir.file("out"), F_OK) != 0, "a failed write leaves no output behind")
    }

    @Test("obd commit reproduces overlaybd-commit's layers byte for byte", .enabled(if: ReferenceFiles.shouldRun),
          arguments: [("l1/layer1.commit", [String]()), ("l1/layer1.commit.lz4.zfile", ["-z"]), ("l1/layer1.commit.lz4.zfile.tar", ["-z", "-t"]),
                      ("l1/layer1.commit.zstd-bs16.zfile", ["-z", "--algorithm", "zstd", "--bs", "16"]),
                      ("l2/layer2.commit", ["--parent-uuid", u1]), ("l2/layer2.commit.lz4.zfile", ["-z", "--parent-uuid", u1])])
    func commit(expected: String, flags: [String]) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let layer = String(expected.prefix(2))
        let uuid = layer == "l1" ? Self.u1 : Self.u2
        let src = try ReferenceFiles.path("lsmt/" + layer)
        let r = run([obd, "commit", "--uuid", uuid] + flags + [src + "/writable_data", src + "/writable_index", dir.file("out")])
        #expect(r.status == 0, "\(r.err)")
        #expect(sameBytes(dir.file("out"), try ReferenceFiles.path("lsmt/" + expected)))
    }

    @Test("obd merge reproduces overlaybd-merge's output", .enabled(if: ReferenceFiles.shouldRun))
    func merge() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let r = run([obd, "merge", try ReferenceFiles.path("lsmt/merged/config.v1.json"), dir.file("out")])
        #expect(r.status == 0, "\(r.err)")
        #expect(sameBytes(dir.file("out"), try ReferenceFiles.path("lsmt/merged/merged.lz4.zfile")))
    }

    @Test("obd inspect --index prints each layer's index as in the .index.txt files", .enabled(if: ReferenceFiles.shouldRun),
          arguments: [(["l1/layer1.commit"], "l1/layer1.commit.index.txt"), (["l2/layer2.commit"], "l2/layer2.commit.index.txt"),
                      (["merged/merged.lz4.zfile"], "merged/merged.lz4.zfile.index.txt"),
                      (["l1/writable_data", "l1/writable_index"], "l1/writable.merged-index.txt"),
                      (["l1/writable_data.after-create", "l1/writable_index.after-create"], "l1/writable.after-create.merged-index.txt"),
                      (["l2/writable_data", "l2/writable_index"], "l2/writable.merged-index.txt"),
                      (["../base/ext4_64"], "../base/ext4_64.index.txt")])
    func inspectIndex(files: [String], expected: String) throws {
        let r = run([obd, "inspect", "--index"] + (try files.map { try ReferenceFiles.path("lsmt/" + $0) }))
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out == readText(try ReferenceFiles.path("lsmt/" + expected)))
    }

    @Test("obd inspect reports headers and block statistics, also as JSON", .enabled(if: ReferenceFiles.shouldRun))
    func inspect() throws {
        let f = try ReferenceFiles.path("lsmt/l1/layer1.commit.lz4.zfile.tar")
        let t = run([obd, "inspect", f])
        #expect(t.status == 0 && t.out.contains("layout: tar > zfile > lsmt") && t.out.contains("blocks: 518"))
        let j = run([obd, "inspect", "--json", f])
        #expect(j.status == 0 && j.out.contains("\"blocks\" : 518") && j.out.contains("\"uuid\" : \"\(Self.u1)\""))
    }

    @Test("obd export writes the virtual disk, sparse, or to stdout", .enabled(if: ReferenceFiles.shouldRun))
    func export() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let cfg = try ReferenceFiles.path("lsmt/merged/config.v1.json")
        let r = run([obd, "export", cfg, "-o", dir.file("disk.raw")])
        #expect(r.status == 0, "\(r.err)")
        let sum = run(["/usr/bin/sha256sum", dir.file("disk.raw")])
        #expect(sum.out.hasPrefix("af3aaf93cf13d1483f27b95e7f0fd9300e24903e77cd5d7ee72842906e418121"))
        let du = run(["/usr/bin/du", "-k", dir.file("disk.raw")])
        #expect((Int(du.out.split(separator: "\t").first ?? "") ?? Int.max) < 16 * 1024, "the raw file is sparse")
        let s = run(["/bin/sh", "-c", "'\(obd)' export '\(cfg)' -o - | sha256sum"])
        #expect(s.out.hasPrefix("af3aaf93cf13d1483f27b95e7f0fd9300e24903e77cd5d7ee72842906e418121"))
    }

    @Test("create, write nothing, commit: a valid empty layer; errors are one clear line with a non-zero exit")
    func createAndErrors() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        #expect(run([obd, "create", "-u", Self.u1, dir.file("d"), dir.file("i"), "2"]).status == 0)
        let again = run([obd, "create", dir.file("d"), dir.file("i"), "2"])
        #expect(again.status == 1 && again.err.contains("File exists"))
        #expect(run([obd, "commit", "-m", "empty", dir.file("d"), dir.file("i"), dir.file("c")]).status == 0)
        let info = run([obd, "inspect", dir.file("c")])
        #expect(info.out.contains("virtual size: 2147483648") && info.out.contains("message: empty") && info.out.contains("parent uuid: \(Self.u1)"))
        for argv in [[obd, "commit", "--uuid", "nope", dir.file("d"), dir.file("i"), dir.file("c2")],
                     [obd, "commit", "-t", dir.file("d"), dir.file("i"), dir.file("c3")],
                     [obd, "inspect", dir.file("missing")],
                     [obd, "zfile", "-x", dir.file("d"), dir.file("x")],
                     [obd, "export", dir.file("nope.json"), "-o", dir.file("o")],
                     [obd, "commit", dir.file("d"), dir.file("i"), dir.file("c")]] {
            let r = run(argv)
            #expect(r.status != 0, "\(argv)")
            #expect(r.err.hasPrefix("obd: error: ") || r.err.hasPrefix("Error: "), "\(r.err)")
            #expect(r.err.split(separator: "\n").count == 1, "\(r.err)")
        }
    }
}

import Glibc

@Suite("obd CLI streams")
struct CLIStreamTests {
    @Test("obd zfile with one argument compresses standard input")
    func stdinCompress() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let obd = builtProduct("obd")
        let text = String(repeating: "from standard input\n", count: 5000)
        let r = run([obd, "zfile", dir.file("s.zfile")], stdin: text)
        #expect(r.status == 0, "\(r.err)")
        #expect(run([obd, "zfile", "-x", dir.file("s.zfile"), dir.file("s.out")]).status == 0)
        #expect(readText(dir.file("s.out")) == text)
    }
}

@Suite("obd serve nbd", .serialized)
struct ServeNBDTests {
    /// Starts `obd serve nbd`; returns its pid once the socket accepts connections.
    static func start(_ args: [String], socket: String, log: String) throws -> pid_t {
        let obd = builtProduct("obd")
        guard let pid = spawn([obd, "serve", "nbd"] + args, stderr: log) else { throw CLIError("spawn failed") }
        for _ in 0..<200 {
            if readText(log).contains("serving") { return pid }
            usleep(25_000)
        }
        kill(pid, SIGKILL)
        throw CLIError("server did not become ready: \(readText(log))")
    }

    static func stop(_ pid: pid_t) -> Int32 {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status
    }

    struct CLIError: Error { let text: String; init(_ t: String) { text = t } }

    @Test("qemu-img compare: the NBD export equals obd export of the same image", .enabled(if: ReferenceFiles.shouldRun))
    func qemuCompare() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let cfg = try ReferenceFiles.path("lsmt/merged/config.v1.json")
        #expect(run([builtProduct("obd"), "export", cfg, "-o", dir.file("disk.raw")]).status == 0)
        let pid = try Self.start([cfg, "--socket", dir.file("s")], socket: dir.file("s"), log: dir.file("log"))
        let r = run(["/usr/bin/qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd+unix:///?socket=" + dir.file("s"), dir.file("disk.raw")])
        #expect(r.status == 0, "\(r.out) \(r.err)")
        #expect(r.out.contains("Images are identical"))
        #expect(Self.stop(pid) == 0)
    }

    @Test("qemu-io writes through a TCP export land in the upper and survive a restart")
    func qemuWrites() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let obd = builtProduct("obd")
        #expect(run([obd, "create", dir.file("d"), dir.file("i"), "1"]).status == 0)
        let cfg = dir.file("config.v1.json")
        _ = run(["/bin/sh", "-c", "printf '{\"lowers\":[],\"upper\":{\"data\":\"d\",\"index\":\"i\"}}' > '\(cfg)'"])
        let pid = try Self.start([cfg, "--listen", "127.0.0.1:0"], socket: "", log: dir.file("log"))
        let port = readText(dir.file("log")).components(separatedByTCP: ())
        #expect(!port.isEmpty)
        let url = "nbd://127.0.0.1:\(port)"
        let w = run(["/usr/bin/qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 64k", "-c", "write -z 4M 8k", "-c", "flush", url])
        #expect(w.status == 0, "\(w.out) \(w.err)")
        #expect(Self.stop(pid) == 0)
        let exported = run(["/bin/sh", "-c", "'\(obd)' export '\(cfg)' -o - | head -c 1114112 | tail -c 65536 | od -v -An -tx1 | sort -u"])
        #expect(exported.out.trimmingCharacters() == "ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab")
    }
}

extension String {
    /// The port in an "obd: serving ... on tcp:HOST:PORT (...)" line.
    func components(separatedByTCP: ()) -> String {
        guard let r = range(of: "on tcp:") else { return "" }
        let rest = self[r.upperBound...]
        guard let space = rest.firstIndex(of: " ") else { return "" }
        let addr = rest[..<space]
        return String(addr[addr.index(after: addr.lastIndex(of: ":")!)...])
    }
}
