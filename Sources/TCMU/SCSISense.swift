/// The outcome of a SCSI command: GOOD, or CHECK CONDITION with fixed-format sense.
public struct SCSIStatus: Equatable, Sendable, CustomStringConvertible {
    public var status: UInt8
    public var senseKey: UInt8 = 0
    public var asc: UInt8 = 0
    public var ascq: UInt8 = 0

    public static let good = SCSIStatus(status: 0x00)

    public static func check(_ key: UInt8, _ asc: UInt8, _ ascq: UInt8 = 0) -> SCSIStatus {
        SCSIStatus(status: 0x02, senseKey: key, asc: asc, ascq: ascq)
    }

    // Sense keys.
    static let notReady: UInt8 = 0x02
    static let mediumError: UInt8 = 0x03
    static let hardwareError: UInt8 = 0x04
    static let illegalRequest: UInt8 = 0x05
    static let dataProtect: UInt8 = 0x07

    public static let invalidOpcode = check(illegalRequest, 0x20)
    public static let invalidFieldInCDB = check(illegalRequest, 0x24)
    public static let invalidFieldInParameterList = check(illegalRequest, 0x26)
    public static let lbaOutOfRange = check(illegalRequest, 0x21)
    public static let parameterListLengthError = check(illegalRequest, 0x1A)
    public static let writeProtected = check(dataProtect, 0x27)
    public static let readError = check(mediumError, 0x11)
    public static let writeError = check(mediumError, 0x0C)

    /// 18-byte fixed-format sense data (empty for GOOD).
    public var senseData: [UInt8] {
        guard status == 0x02 else { return [] }
        var s = [UInt8](repeating: 0, count: 18)
        s[0] = 0x70
        s[2] = senseKey
        s[7] = 10
        s[12] = asc
        s[13] = ascq
        return s
    }

    public var description: String {
        status == 0 ? "GOOD" : "CHECK CONDITION key \(senseKey) asc 0x\(String(asc, radix: 16)) ascq 0x\(String(ascq, radix: 16))"
    }
}
