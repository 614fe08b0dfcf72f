import BlockIO

/// What an NBD server exports: a named block file.
public struct NBDExport: Sendable {
    public var name: String
    public var file: any BlockFile
    /// Export read-only even if the file is writable.
    public var readOnly: Bool
    public var description: String
    /// Reads are cheap and never wait long (local layers): small ones may be served on
    /// the connection's own thread. False for images whose reads may fetch remotely.
    public var inlineReads: Bool

    public init(name: String = "", file: any BlockFile, readOnly: Bool? = nil, description: String = "obd image",
                inlineReads: Bool = true) {
        self.name = name
        self.inlineReads = inlineReads
        self.file = file
        self.readOnly = readOnly ?? !file.isWritable
        self.description = description
    }

    /// Transmission flags for this export.
    var transmissionFlags: UInt16 {
        var f = NBDProtocol.tHasFlags | NBDProtocol.tSendFlush | NBDProtocol.tCanMultiConn
        if readOnly {
            f |= NBDProtocol.tReadOnly
        } else {
            f |= NBDProtocol.tSendFUA | NBDProtocol.tSendTrim | NBDProtocol.tSendWriteZeroes
        }
        return f
    }

    /// Whether a client asking for `requested` gets this export ("" is the default export).
    func matches(_ requested: String) -> Bool { requested.isEmpty || requested == name }
}
