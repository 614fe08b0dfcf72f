import FoundationEssentials
import Threading

/// Reading from the registry: manifests, blob sizes (HEAD, or a one-byte GET), ranged
/// blob reads and whole small blobs.
extension RegistryClient {
    /// The manifest bytes, media type and digest (from Docker-Content-Digest if sent).
    public func manifest(repository: String, reference: String) throws -> (bytes: [UInt8], mediaType: String, digest: String?) {
        let url = base + repository + "/manifests/" + reference
        let r = try send(url: url, repository: repository, headers: ["Accept: " + Self.manifestAccept])
        try check(r, url)
        return (r.body, r.headers["content-type"] ?? "", r.headers["docker-content-digest"])
    }

    /// The size of a blob: `HEAD` (following redirects); when that is refused (a pre-signed
    /// object-store URL signs `GET` only) or has no length, `GET` with `Range: bytes=0-0`
    /// and the total of its Content-Range, as overlaybd does. One deadline for both.
    public func blobSize(repository: String, digest: String) throws -> UInt64 {
        let url = blobURL(repository: repository, digest: digest)
        let deadline = Deadline(seconds: options.timeoutSeconds)
        let r = try send(url: url, repository: repository, method: "HEAD", followRedirects: true, deadline: deadline)
        if r.status == 200, let len = r.headers["content-length"].flatMap(UInt64.init) { return len }
        guard [200, 400, 403, 405, 501].contains(r.status) else {
            try check(r, url)
            throw RegistryError.badResponse(url: url, detail: "HEAD answered \(r.status)")
        }
        var first: UInt8 = 0
        let g = try withUnsafeMutableBytes(of: &first) {
            try send(url: url, repository: repository, followRedirects: true, range: 0..<1, target: $0, deadline: deadline)
        }
        // "bytes 0-0/<total>" (206), "bytes */<total>" (416: an empty blob).
        if g.status == 206 || g.status == 416, let total = g.headers["content-range"].flatMap(Self.contentRangeTotal) { return total }
        try check(g, url)
        if g.status == 200, let len = g.headers["content-length"].flatMap(UInt64.init) { return len }
        throw RegistryError.badResponse(url: url, detail: "HEAD answered \(r.status) and GET gave no Content-Range total")
    }

    /// The total of a Content-Range value (`bytes 0-0/1234`), nil if unknown (`*`).
    static func contentRangeTotal(_ value: String) -> UInt64? {
        guard let slash = value.lastIndex(of: "/") else { return nil }
        return UInt64(value[value.index(after: slash)...].trimmingWhitespace())
    }

    /// Reads `buffer.count` bytes of a blob at `offset` with HTTP Range requests.
    /// Returns the bytes read (fewer only at the end of the blob). A response shorter
    /// than asked (a server or proxy that cut the body) is continued from where it stopped.
    public func readBlob(repository: String, digest: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try readRange(repository: repository, digest: digest, offset: offset, count: buffer.count) { at, deadline in
            try readOnce(repository: repository, digest: digest, offset: offset + UInt64(at),
                         into: .buffer(UnsafeMutableRawBufferPointer(rebasing: buffer[at...])), deadline: deadline)
        }
    }

    /// Reads `count` bytes of a blob at `offset` and hands them to `deliver` in order, in
    /// pieces as they arrive (no buffer for the whole range); returns the bytes delivered
    /// (fewer only at the blob's end). Retries, continuations after a cut connection and
    /// the deadline are those of `readBlob`. A throw from `deliver` ends the read with it.
    public func streamBlob(repository: String, digest: String, offset: UInt64, count: Int,
                           _ deliver: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        try withoutActuallyEscaping(deliver) { deliver in
            try readRange(repository: repository, digest: digest, offset: offset, count: count) { at, deadline in
                let from = offset + UInt64(at)
                return try readOnce(repository: repository, digest: digest, offset: from,
                                    into: .stream(HTTPTransport.BodyStream(offset: from, capacity: count - at, deliver: deliver)),
                                    deadline: deadline)
            }
        }
    }

    /// The loop of a range read: `once(done, deadline)` reads from `done` on and returns
    /// the bytes it got (0 at the blob's end), until `count` bytes are in.
    private func readRange(repository: String, digest: String, offset: UInt64, count: Int,
                           _ once: (Int, Deadline) throws -> Int) throws -> Int {
        let started = monotonicSeconds()
        // One deadline for the read, its retries, token fetches and continuations.
        let deadline = Deadline(seconds: options.timeoutSeconds, patient: options.blockOnOutage)
        var done = 0
        while done < count {
            let n = try once(done, deadline)
            if n == 0 { break }
            done += n
        }
        let m = RegistryMetrics.shared
        m.fetches.increment()
        m.fetchBytes.increment(by: done)
        m.fetchLatency.recordNanoseconds(Int64((monotonicSeconds() - started) * 1e9))
        return done
    }

    /// Where one range response goes.
    enum RangeTarget {
        case buffer(UnsafeMutableRawBufferPointer)
        case stream(HTTPTransport.BodyStream)
        var count: Int {
            switch self {
            case .buffer(let b): b.count
            case .stream(let s): s.capacity
            }
        }
    }

    func readOnce(repository: String, digest: String, offset: UInt64, into target: RangeTarget,
                  deadline: Deadline) throws -> Int {
        guard target.count > 0 else { return 0 }
        let url = blobURL(repository: repository, digest: digest)
        let range = offset..<(offset + UInt64(target.count))
        let r: HTTPTransport.Response
        switch target {
        case .buffer(let buffer):
            r = try send(url: url, repository: repository, followRedirects: true, range: range, target: buffer,
                         deadline: deadline, viaP2P: true)
        case .stream(let stream):
            r = try send(url: url, repository: repository, followRedirects: true, range: range, stream: stream,
                         deadline: deadline, viaP2P: true)
        }
        if r.status == 416 { return 0 }
        try check(r, url)
        if r.status == 200 {
            // A server that ignores Range sends the whole blob: only a request from 0 can use it.
            guard offset == 0 else { throw RegistryError.badResponse(url: url, detail: "the server ignored the Range header") }
            return r.copied
        }
        guard r.status == 206 else { throw RegistryError.http(url: url, status: r.status) }
        if case .stream = target, r.headers["content-range"] == nil {
            throw RegistryError.badResponse(url: url, detail: "a 206 response without Content-Range")
        }
        if let cr = r.headers["content-range"], !cr.hasPrefix("bytes \(offset)-") {
            throw RegistryError.badResponse(url: url, detail: "Content-Range '\(cr)' does not match the request")
        }
        if r.overflow { throw RegistryError.badResponse(url: url, detail: "more bytes than requested") }
        return r.copied
    }

    /// Whether the repository has the blob (HEAD).
    public func hasBlob(repository: String, digest: String, push: Bool = false) throws -> Bool {
        let url = blobURL(repository: repository, digest: digest)
        let r = try send(url: url, repository: repository, method: "HEAD", followRedirects: true, push: push)
        if r.status == 404 { return false }
        try check(r, url)
        return true
    }

    /// Fetches a whole blob into memory (configs), checking its digest.
    public func blob(repository: String, digest: String, limit: Int = 64 << 20) throws -> [UInt8] {
        let url = blobURL(repository: repository, digest: digest)
        let r = try send(url: url, repository: repository, followRedirects: true)
        try check(r, url)
        if digest.hasPrefix("sha256:"), Digest.sha256(of: r.body).description != digest {
            throw RegistryError.badResponse(url: url, detail: "content does not match its digest")
        }
        return r.body
    }
}
