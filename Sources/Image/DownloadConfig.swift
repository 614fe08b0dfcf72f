/// The `download` object (background download of remote lowers), with overlaybd's keys
/// and defaults. An image config without one inherits the global config's whole object.
public struct DownloadConfig: Sendable, Equatable, Decodable {
    public var enable = false
    /// Seconds to wait after the image opens.
    public var delay = 300
    /// Up to this many extra random seconds (0 means 30, as in overlaybd).
    public var delayExtra = 30
    /// Throttle in MiB/s (<= 0: unthrottled).
    public var maxMBps = 100
    /// Attempts per layer.
    public var tryCnt = 5
    /// Copy chunk in bytes.
    public var blockSize = 262_144

    enum CodingKeys: String, CodingKey { case enable, delay, delayExtra, maxMBps, tryCnt, blockSize }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = DownloadConfig()
        enable = try c.value(.enable, default: d.enable)
        delay = try c.value(.delay, default: d.delay)
        delayExtra = try c.value(.delayExtra, default: d.delayExtra)
        maxMBps = try c.value(.maxMBps, default: d.maxMBps)
        tryCnt = try c.value(.tryCnt, default: d.tryCnt)
        blockSize = try c.value(.blockSize, default: d.blockSize)
    }

    /// Rejects values that cannot work.
    func validate(path: String) throws {
        guard delay >= 0, delayExtra >= 0, tryCnt >= 1, blockSize >= 4096, blockSize <= 64 << 20 else {
            throw ImageError.config(path: path, detail: "field 'download': delay/delayExtra must be >= 0, tryCnt >= 1, blockSize 4096...64 MiB")
        }
    }
}
