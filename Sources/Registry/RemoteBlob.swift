import BlockIO

/// A registry blob seen as a read-only file: every read is an HTTP range request.
/// (The persistent cache wraps this; see the BlockCache module when it lands.)
public final class RemoteBlob: BlockFile, @unchecked Sendable {
    public let client: RegistryClient
    public let repository: String
    public let digest: String
    public let size: UInt64

    public var name: String { client.blobURL(repository: repository, digest: digest) }

    /// - Parameter size: the blob size if known (from config), else asked with HEAD.
    public init(client: RegistryClient, repository: String, digest: String, size: UInt64? = nil) throws {
        self.client = client
        self.repository = repository
        self.digest = digest
        self.size = try size ?? client.blobSize(repository: repository, digest: digest)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - offset))
        let got = try client.readBlob(repository: repository, digest: digest, offset: offset,
                                      into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
        guard got == n else {
            throw BlockIOError.truncated(name: name, offset: offset, wanted: n, got: got)
        }
        return n
    }
}
