import BlockCache
import BlockIO
import Glibc
import Registry
import Synchronization

/// A lower layer read from a registry blob (`digest` + `repoBlobUrl`): on-demand ranged
/// reads through the host-wide cache, switchable to a downloaded local copy.
public final class RemoteLayer: Sendable {
    public let digest: String
    public let size: UInt64
    /// The layer dir (background-download target), absolute; empty if none.
    public let dir: String
    public let blobURL: String
    /// Direct registry access (the background download reads here, not via the cache).
    public let blob: RemoteBlob
    /// What the layer reads: the cached blob, later perhaps the local copy.
    public let file: SwitchFile

    init(digest: String, dir: String, blob: RemoteBlob, cached: any BlockFile) {
        self.digest = digest
        self.size = blob.size
        self.dir = dir
        self.blobURL = blob.name
        self.blob = blob
        self.file = SwitchFile(remote: cached)
    }

    /// Whether reads already go to a verified local copy.
    public var isLocal: Bool { file.isLocal }
}

/// Where an image's remote lowers come from: one registry client per repository URL
/// (so tokens and resolved redirects are shared by its layers), the credential file
/// (read again by the clients on 401/403), the P2P proxy if it answers, and the
/// host-wide cache.
final class RemoteSources {
    let global: GlobalConfig
    let log: @Sendable (String) -> Void
    private var clients: [String: RegistryClient] = [:]
    private var credentials: CredentialFile?
    /// The P2P proxy, probed once when the first remote lower is opened (device creation).
    private var p2p: P2PProxy??

    init(global: GlobalConfig, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.global = global
        self.log = log
    }

    /// With `p2pConfig.enable`, the proxy if a TCP connection to it opens now (as
    /// overlaybd checks at device creation); nil otherwise, and reads go to the registry.
    func p2pProxy() throws -> P2PProxy? {
        if let p2p { return p2p }
        var found: P2PProxy?
        if global.p2pConfig.enable {
            let proxy: P2PProxy
            do { proxy = try P2PProxy(address: global.p2pConfig.address) } catch {
                throw ImageError.config(path: label, detail: "field 'p2pConfig.address': \(error)")
            }
            if proxy.answers() {
                log("P2P proxy \(proxy.address) answers: blob range reads go through it (behind the local cache)")
                found = proxy
            } else {
                log("P2P proxy \(proxy.address) does not answer: blob range reads go to the registry directly")
            }
        }
        p2p = .some(found)
        return found
    }

    /// How errors name the global config (built-in defaults have no path).
    var label: String { global.path.isEmpty ? "overlaybd.json (built-in defaults)" : global.path }

    /// The cache the global config names; nil when another process holds its folder
    /// (reads then go to the registry uncached: slower, never wrong).
    func cache() throws -> BlockCache? {
        let c = global.effectiveCache
        guard c.type == "file" else {
            throw ImageError.config(path: label, detail: "cacheType '\(c.type)' is not supported for remote layers (use \"file\")")
        }
        guard c.sizeGB > 0 else {
            throw ImageError.config(path: label, detail: "cacheSizeGB \(c.sizeGB) must be at least 1")
        }
        do {
            return try BlockCache.shared(directory: c.dir, capacity: UInt64(c.sizeGB) << 30, refillSize: c.refillSize)
        } catch is BlockCacheError {
            return nil
        } catch {
            throw ImageError.config(path: label, detail: "cache folder '\(c.dir)': \(error)")
        }
    }

    func client(for url: RepositoryURL) throws -> RegistryClient {
        if let c = clients[url.description] { return c }
        // One credential file for all of an image's clients (one re-read serves them all).
        if credentials == nil { credentials = try global.credentialFileHandle() }
        var options = try global.registryOptions(host: url.host, plainHTTP: url.plainHTTP, credentials: CredentialStore())
        options.credentialFile = credentials
        options.p2p = try p2pProxy()
        options.log = log
        let c = RegistryClient(host: url.host, options: options)
        clients[url.description] = c
        return c
    }
}
