import BlockIO

/// Writing to the registry: blob uploads (monolithic or chunked), cross-repository
/// mounts and manifest PUT.
extension RegistryClient {
    /// Asks the registry to mount a blob from another repository of the same registry
    /// (cross-repository mount); true if it did.
    public func mountBlob(repository: String, digest: String, from: String) throws -> Bool {
        let url = base + repository + "/blobs/uploads/?mount=\(Self.percentEncode(digest))&from=\(Self.percentEncode(from))"
        let empty: [UInt8] = []
        let r = try empty.withUnsafeBytes { try send(url: url, repository: repository, method: "POST", body: $0, push: true) }
        return r.status == 201
    }

    /// Uploads a blob from a file: one monolithic PUT up to `chunkSize` bytes, else a
    /// chunked upload (PATCH with Content-Range per chunk, then PUT with the digest), so a
    /// large blob is never held in memory whole. The registry checks the digest; a failed
    /// chunked upload is started over once.
    public func uploadBlob(repository: String, digest: String, file: any BlockFile, chunkSize: Int = 64 << 20) throws {
        if file.size <= UInt64(chunkSize) {
            let bytes = try file.readBytes(at: 0, count: Int(file.size))
            let loc = try startUpload(repository: repository)
            try finishUpload(repository: repository, location: loc, digest: digest, body: bytes)
            return
        }
        do {
            try chunkedUpload(repository: repository, digest: digest, file: file, chunkSize: chunkSize)
        } catch let e as RegistryError {
            if case .authenticationFailed = e { throw e }
            try chunkedUpload(repository: repository, digest: digest, file: file, chunkSize: chunkSize)
        }
    }

    func chunkedUpload(repository: String, digest: String, file: any BlockFile, chunkSize: Int) throws {
        var loc = try startUpload(repository: repository)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < file.size {
            let n = Int(min(UInt64(chunkSize), file.size - off))
            let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
            try file.readExactly(into: part, at: off)
            let r = try send(url: loc, repository: repository, method: "PATCH",
                             headers: ["Content-Type: application/octet-stream", "Content-Range: \(off)-\(off + UInt64(n) - 1)"],
                             body: UnsafeRawBufferPointer(part), push: true)
            guard r.status == 202, let next = r.headers["location"] else {
                try check(r, loc)
                throw RegistryError.badResponse(url: HTTPTransport.redact(loc), detail: "chunk upload answered \(r.status)")
            }
            loc = absolute(next, relativeTo: loc)
            off += UInt64(n)
        }
        try finishUpload(repository: repository, location: loc, digest: digest, body: [])
    }

    /// Opens an upload session; returns its absolute Location.
    func startUpload(repository: String) throws -> String {
        let start = base + repository + "/blobs/uploads/"
        let empty: [UInt8] = []
        let r = try empty.withUnsafeBytes { try send(url: start, repository: repository, method: "POST", body: $0, push: true) }
        guard r.status == 202, let loc = r.headers["location"] else {
            try check(r, start)
            throw RegistryError.badResponse(url: start, detail: "upload start answered \(r.status) without a Location")
        }
        return absolute(loc, relativeTo: start)
    }

    func finishUpload(repository: String, location: String, digest: String, body: [UInt8]) throws {
        let put = location + (location.contains("?") ? "&" : "?") + "digest=" + Self.percentEncode(digest)
        let done = try body.withUnsafeBytes {
            try send(url: put, repository: repository, method: "PUT",
                     headers: ["Content-Type: application/octet-stream"], body: $0, push: true)
        }
        guard done.status == 201 else {
            try check(done, put)
            throw RegistryError.badResponse(url: HTTPTransport.redact(put), detail: "blob upload answered \(done.status)")
        }
    }

    /// Stores a manifest (or index) under `reference` (a tag or its digest).
    public func pushManifest(repository: String, reference: String, bytes: [UInt8], mediaType: String) throws {
        let url = base + repository + "/manifests/" + reference
        let r = try bytes.withUnsafeBytes {
            try send(url: url, repository: repository, method: "PUT", headers: ["Content-Type: " + mediaType], body: $0, push: true)
        }
        guard r.status == 201 || r.status == 200 else {
            try check(r, url)
            throw RegistryError.badResponse(url: url, detail: "manifest upload answered \(r.status)")
        }
    }
}
