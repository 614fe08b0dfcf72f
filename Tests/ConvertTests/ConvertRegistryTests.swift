import BlockIO
import Convert
import Ext4
import Glibc
import Image
import LSMT
import Registry
import Testing
import TestSupport

/// obd convert between registries (docker-registry on loopback), layer reuse through the
/// conversion cache, and the converted image served lazily from the registry.
@Suite("obd convert with a registry", .serialized,
       .enabled(if: access("/usr/sbin/mke2fs", X_OK) == 0 && (LocalRegistry.available || ReferenceFiles.isCI)))
struct ConvertRegistryTests {
    let obd = builtProduct("obd")

    func summary(_ out: String) -> JSONValue? {
        out.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8)) }.first { $0["event"]?.string == "summary" }
    }

    @Test("registry to registry; a second image sharing base layers reuses them (cache) and uploads only what is new; the result serves lazily")
    func registryRoundTrip() throws {
        let dir = TemporaryDirectory("obd-convert-reg")
        defer { dir.remove() }
        let reg = try LocalRegistry(auth: .htpasswd(user: "conv", password: "conv-Pa55"))
        let creds = "conv:conv-Pa55"
        let src = try ConvertImageTests.makeLayers(dir)
        let copy = run(["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", creds,
                        "oci:\(src.dir):v1", "docker://\(reg.host)/src/app:v1"])
        #expect(copy.status == 0, "\(copy.err)")
        // A second image: the same two base layers, another top layer.
        let other = dir.file("layers/hostile/traversal.tar")
        let src2 = try SourceImage(dir: dir.file("src2"), tag: "v1", layers: [
            (dir.file("layers/base.tar"), "application/vnd.oci.image.layer.v1.tar", dir.file("layers/base.tar")),
            (dir.file("layers/update.tar.gz"), "application/vnd.oci.image.layer.v1.tar+gzip", dir.file("layers/update.tar")),
            (other, "application/vnd.oci.image.layer.v1.tar", other),
        ])
        let copy2 = run(["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", creds,
                         "oci:\(src2.dir):v1", "docker://\(reg.host)/src/app2:v1"])
        #expect(copy2.status == 0, "\(copy2.err)")
        let cache = dir.file("cache")
        let a = run([obd, "convert", "--vsize", "4", "--plain-http", "-u", creds, "--cache-dir", cache, "-d", dir.file("w1"), "--json",
                     "\(reg.host)/src/app:v1", "\(reg.host)/obd/app:v1"])
        #expect(a.status == 0, "\(a.err)")
        let sa = try #require(summary(a.out))
        #expect(sa["built"]?.int == 3 && sa["reused"]?.int == 0 && sa["uploaded"]?.int == 3)
        #expect(!a.out.contains("conv-Pa55") && !a.err.contains("conv-Pa55"))
        let b = run([obd, "convert", "--vsize", "4", "--plain-http", "-u", creds, "--cache-dir", cache, "-d", dir.file("w2"), "--json",
                     "\(reg.host)/src/app2:v1", "\(reg.host)/obd/app:v2"])
        #expect(b.status == 0, "\(b.err)")
        let sb = try #require(summary(b.out))
        #expect(sb["built"]?.int == 1 && sb["reused"]?.int == 2, "\(b.out)")
        #expect(sb["uploaded"]?.int == 1 && sb["present"]?.int == 2, "\(b.out)")
        #expect(try ConversionCache(directory: cache).count == 4)
        // Into another repository of the same registry: nothing rebuilt, every layer mounted.
        let c = run([obd, "convert", "--vsize", "4", "--plain-http", "-u", creds, "--cache-dir", cache, "-d", dir.file("w3"), "--json",
                     "\(reg.host)/src/app2:v1", "\(reg.host)/obd/other:v1"])
        #expect(c.status == 0, "\(c.err)")
        let sc = try #require(summary(c.out))
        #expect(sc["built"]?.int == 0 && sc["reused"]?.int == 3 && sc["mounted"]?.int == 3 && sc["uploaded"]?.int == 0, "\(c.out)")
        // The converted manifest, as a client sees it.
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true, credentials:
            CredentialStore(entries: [(reg.host, Credential(username: "conv", password: "conv-Pa55"))])))
        let m = try client.imageManifest(repository: "obd/app", reference: "v1")
        #expect(m.mediaType == "application/vnd.docker.distribution.manifest.v2+json")
        #expect(m.layers.allSatisfy { $0.mediaType == "application/vnd.docker.image.rootfs.diff.tar"
            && $0.annotations?["containerd.io/snapshot/overlaybd/blob-digest"] == $0.digest
            && $0.annotations?["containerd.io/snapshot/overlaybd/blob-size"] == "\($0.size)"
            && $0.annotations?["containerd.io/snapshot/overlaybd/version"] == "0.1.0" })
        let config = try JSONValue.parse(client.blob(repository: "obd/app", digest: m.config.digest))
        #expect(config["rootfs"]?["diff_ids"]?.array?.compactMap { $0.string } == m.layers.map(\.digest))
        #expect(config["config"]?["Cmd"] != nil && config["history"] != nil)
        // Served lazily from the registry: the tree equals the model.
        try LocalRegistry.write(dir.file("cred.json"), #"{"auths": {"\#(reg.host)": {"username": "conv", "password": "conv-Pa55"}}}"#)
        try LocalRegistry.write(dir.file("overlaybd.json"), #"{"cacheConfig": {"cacheType": "file", "cacheDir": "\#(dir.file("rcache"))", "cacheSizeGB": 1}, "credentialConfig": {"mode": "file", "path": "\#(dir.file("cred.json"))"}}"#)
        let lowers = m.layers.map { #"{"digest": "\#($0.digest)", "size": \#($0.size)}"# }.joined(separator: ", ")
        try LocalRegistry.write(dir.file("config.v1.json"), #"{"repoBlobUrl": "http://\#(reg.host)/v2/obd/app/blobs", "lowers": [\#(lowers)]}"#)
        let image = try Image.open(configPath: dir.file("config.v1.json"), global: GlobalConfig.load(from: dir.file("overlaybd.json")))
        #expect(image.hasRemoteLowers)
        let fs = try Ext4Filesystem(file: image.stack, epoch: 1, writable: false)
        let ours = try ConvertImageTests.rows(fs)
        let model = run(["/usr/bin/env", "python3", ConvertImageTests.fixtures + "/layers.py", "model",
                         dir.file("layers/base.tar"), dir.file("layers/update.tar.gz"), dir.file("layers/sparse.tar.zst")])
        #expect(ours == model.out.split(separator: "\n").map(String.init))
        try fs.close()
    }

    @Test("token auth: pulling and pushing with Bearer tokens for pull and push scopes")
    func tokenAuth() throws {
        let dir = TemporaryDirectory("obd-convert-token")
        defer { dir.remove() }
        let tokens = try TokenServer(user: "tok", password: "tok-Pa55")
        defer { tokens.stop() }
        let reg = try LocalRegistry(auth: .token(tokens))
        let src = try ConvertImageTests.makeLayers(dir)
        let copy = run(["/usr/bin/skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", "tok:tok-Pa55",
                        "oci:\(src.dir):v1", "docker://\(reg.host)/src/app:v1"])
        #expect(copy.status == 0, "\(copy.err)")
        try LocalRegistry.write(dir.file("cred.json"), #"{"auths": {"\#(reg.host)": {"auth": "dG9rOnRvay1QYTU1"}}}"#)
        try LocalRegistry.write(dir.file("overlaybd.json"), #"{"credentialConfig": {"mode": "file", "path": "\#(dir.file("cred.json"))"}}"#)
        let r = run([obd, "convert", "--vsize", "4", "--plain-http", "--config", dir.file("overlaybd.json"), "--cache-dir", "none",
                     "-d", dir.file("w"), "--json", "\(reg.host)/src/app:v1", "\(reg.host)/obd/app:v1"])
        #expect(r.status == 0, "\(r.err)")
        #expect(summary(r.out)?["uploaded"]?.int == 3)
        #expect(!r.err.contains("tok-Pa55") && !r.out.contains("tok-Pa55"))
        let client = RegistryClient(host: reg.host, options: RegistryOptions(plainHTTP: true, credentials:
            CredentialStore(entries: [(reg.host, Credential(username: "tok", password: "tok-Pa55"))])))
        #expect(try client.imageManifest(repository: "obd/app", reference: "v1").layers.count == 3)
        // Wrong credentials: a clear authentication error, nothing pushed.
        try LocalRegistry.write(dir.file("cred.json"), #"{"auths": {"\#(reg.host)": {"username": "tok", "password": "nope"}}}"#)
        let bad = run([obd, "convert", "--vsize", "4", "--plain-http", "--config", dir.file("overlaybd.json"), "--cache-dir", "none",
                       "-d", dir.file("w2"), "\(reg.host)/src/app:v1", "\(reg.host)/obd/app:v2"])
        #expect(bad.status != 0 && bad.err.contains("Authentication failed") && !bad.err.contains("nope"), "\(bad.err)")
    }
}
