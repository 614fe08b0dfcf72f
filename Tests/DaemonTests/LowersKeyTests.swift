import Daemon
import Image
import Testing

/// What makes two disks share one opened stack of lowers.
@Suite("Daemon: lowers identity")
struct LowersKeyTests {
    static func config(_ lowers: [ImageConfig.Lower]) -> ImageConfig {
        var c = ImageConfig()
        c.lowers = lowers
        return c
    }

    @Test("lowers that differ in any field are different keys, TurboOCI target and gzip index included")
    func everyFieldCounts() {
        var base = ImageConfig.Lower(file: "/layers/meta")
        base.digest = "sha256:" + String(repeating: "a", count: 64)
        let key = LowersKey(config: Self.config([base]), globalPath: "/etc/overlaybd/overlaybd.json")
        var edits: [ImageConfig.Lower] = []
        var t = base; t.targetDigest = "sha256:" + String(repeating: "b", count: 64); edits.append(t)
        t = base; t.targetFile = "/layers/target.tar.gz"; edits.append(t)
        t = base; t.gzipIndex = "/layers/gzip.meta"; edits.append(t)
        t = base; t.size = 4096; edits.append(t)
        t = base; t.dir = "/layers/dir"; edits.append(t)
        for e in edits {
            #expect(LowersKey(config: Self.config([e]), globalPath: "/etc/overlaybd/overlaybd.json") != key, "\(e)")
        }
        #expect(LowersKey(config: Self.config([base]), globalPath: "/etc/overlaybd/other.json") != key)
        #expect(LowersKey(config: Self.config([base]), globalPath: "/etc/overlaybd/overlaybd.json") == key)
    }
}
