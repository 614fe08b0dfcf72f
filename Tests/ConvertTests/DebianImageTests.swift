import BlockIO
import Convert
import Ext4
import Glibc
import LSMT
import Testing
import TestSupport

/// A real image: Debian bookworm minbase (debootstrap, made by the set-up step
/// tools/make-debian-rootfs.sh and cached outside the repo) in two layers, converted
/// and compared with `umoci unpack` of the same source image. Its config has no
/// `created` (the image epoch is then 1), as debootstrap-made images often have not.
@Suite("obd convert: Debian minbase against umoci unpack", .serialized)
struct DebianImageTests {
    static let cache = (getenv("OBD_TEST_CACHE").map { String(cString: $0) } ?? ((getenv("HOME").map { String(cString: $0) } ?? "/root") + "/.cache/obd-test")) + "/debian-minbase"
    static var present: Bool { access(cache + "/rootfs.done", F_OK) == 0 }

    @Test("the converted tree equals umoci's unpack; e2fsck -fn is clean; converting again gives the same layers",
          .enabled(if: present || ReferenceFiles.isCI))
    func minbase() throws {
        try #require(Self.present, "Debian minbase not found in \(Self.cache): run tools/make-debian-rootfs.sh (tools/test.sh does)")
        try #require(access("/usr/bin/umoci", X_OK) == 0, "umoci is missing: run tools/install-deps.sh")
        let dir = TemporaryDirectory("obd-debian")
        defer { dir.remove() }
        try Self.prepareSource(dir)
        // Through a registry: pushed with skopeo, converted from there.
        let reg = try LocalRegistry()
        let push = run(["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
                        "oci:\(dir.file("src")):v1", "docker://\(reg.host)/debian/minbase:bookworm"])
        #expect(push.status == 0, "\(push.err)")
        let c = run([builtProduct("obd"), "convert", "--vsize", "8", "--plain-http", "--cache-dir", "none", "-d", dir.file("w"),
                     "\(reg.host)/debian/minbase:bookworm", "oci:\(dir.file("out")):v1"])
        #expect(c.status == 0, "\(c.err)")
        let want = try Self.umociRows(dir)
        let (stack, digests) = try ConvertImageTests.convertedStack(dir.file("out"))
        #expect(digests.count == 2)
        let fs = try Ext4Filesystem(file: stack, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(fs)
        try fs.close()
        #expect(want.count > 3000)
        #expect(ours == want, "\(Set(ours).symmetricDifference(want).sorted().prefix(20))")
        let (rc, text) = try ApplyReferenceTests.fsck(stack, dir)
        #expect(rc == 0, "\(text)")
        // Converting again (from the OCI layout, a new work dir, a later second: nothing
        // may come from the clock) gives the same layer blobs.
        sleep(1)
        let again = run([builtProduct("obd"), "convert", "--vsize", "8", "--cache-dir", "none", "-d", dir.file("w2"),
                         "oci:\(dir.file("src")):v1", "oci:\(dir.file("out2")):v1"])
        #expect(again.status == 0, "\(again.err)")
        let (_, digests2) = try ConvertImageTests.convertedStack(dir.file("out2"))
        #expect(digests2 == digests)
    }

    /// The source image: layer 1 gzipped (`l1.tar.gz`, no name or time in the gzip header),
    /// layer 2 a plain tar, as an undated OCI layout in `src` (tag v1).
    static func prepareSource(_ dir: TemporaryDirectory) throws {
        let py = ConvertImageTests.fixtures + "/layers.py"
        let prep = run(["/bin/sh", "-c", "gzip -n -c \(cache)/layer1.tar > \(dir.file("l1.tar.gz")) && python3 \(py) oci-undated \(dir.file("src")) \(dir.file("l1.tar.gz")) \(cache)/layer2.tar"])
        guard prep.status == 0 else { throw ConvertImageTests.Failure("preparing the Debian source: \(prep.err)") }
    }

    /// The rows of `umoci unpack` of `src` (unpacked into `bundle`).
    static func umociRows(_ dir: TemporaryDirectory) throws -> [String] {
        let u = run(["/usr/bin/umoci", "unpack", "--image", dir.file("src") + ":v1", dir.file("bundle")])
        guard u.status == 0 else { throw ConvertImageTests.Failure("umoci unpack: \(u.err)") }
        return run(["/usr/bin/env", "python3", ConvertImageTests.fixtures + "/layers.py", "walk", dir.file("bundle/rootfs")]).out.split(separator: "\n").map(String.init)
    }
}
