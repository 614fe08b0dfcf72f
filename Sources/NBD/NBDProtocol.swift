/// Constants of the NBD protocol (fixed newstyle negotiation, simple replies).
/// See the README ("obd serve nbd") for how obd uses them.
public enum NBDProtocol {
    public static let initMagic: UInt64 = 0x4E42_444D_4147_4943        // "NBDMAGIC"
    public static let optionMagic: UInt64 = 0x4948_4156_454F_5054      // "IHAVEOPT"
    public static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9
    public static let requestMagic: UInt32 = 0x2560_9513
    public static let simpleReplyMagic: UInt32 = 0x6744_6698

    // Handshake flags (server) and client flags.
    public static let flagFixedNewstyle: UInt16 = 1 << 0
    public static let flagNoZeroes: UInt16 = 1 << 1
    public static let clientFixedNewstyle: UInt32 = 1 << 0
    public static let clientNoZeroes: UInt32 = 1 << 1

    // Options.
    public static let optExportName: UInt32 = 1
    public static let optAbort: UInt32 = 2
    public static let optList: UInt32 = 3
    public static let optStartTLS: UInt32 = 5
    public static let optInfo: UInt32 = 6
    public static let optGo: UInt32 = 7
    public static let optStructuredReply: UInt32 = 8

    // Option replies.
    public static let repAck: UInt32 = 1
    public static let repServer: UInt32 = 2
    public static let repInfo: UInt32 = 3
    public static let repErrUnsupported: UInt32 = 0x8000_0001
    public static let repErrPolicy: UInt32 = 0x8000_0002
    public static let repErrInvalid: UInt32 = 0x8000_0003
    public static let repErrUnknown: UInt32 = 0x8000_0006
    public static let repErrTooBig: UInt32 = 0x8000_0009

    // Info types.
    public static let infoExport: UInt16 = 0
    public static let infoName: UInt16 = 1
    public static let infoDescription: UInt16 = 2
    public static let infoBlockSize: UInt16 = 3

    // Transmission flags.
    public static let tHasFlags: UInt16 = 1 << 0
    public static let tReadOnly: UInt16 = 1 << 1
    public static let tSendFlush: UInt16 = 1 << 2
    public static let tSendFUA: UInt16 = 1 << 3
    public static let tSendTrim: UInt16 = 1 << 5
    public static let tSendWriteZeroes: UInt16 = 1 << 6
    public static let tCanMultiConn: UInt16 = 1 << 8

    // Commands and command flags.
    public static let cmdRead: UInt16 = 0
    public static let cmdWrite: UInt16 = 1
    public static let cmdDisconnect: UInt16 = 2
    public static let cmdFlush: UInt16 = 3
    public static let cmdTrim: UInt16 = 4
    public static let cmdWriteZeroes: UInt16 = 6
    public static let cmdFlagFUA: UInt16 = 1 << 0

    // Errors in replies (errno values the protocol fixes).
    public static let ePerm: UInt32 = 1
    public static let eIO: UInt32 = 5
    public static let eNoMem: UInt32 = 12
    public static let eInval: UInt32 = 22
    public static let eNoSpc: UInt32 = 28
    public static let eOverflow: UInt32 = 75
    public static let eNotSup: UInt32 = 95
    public static let eShutdown: UInt32 = 108

    /// Largest request payload obd accepts (reads and writes).
    public static let maxPayload = 32 << 20
    /// Largest option payload obd reads during negotiation.
    public static let maxOptionLength = 64 * 1024
}
