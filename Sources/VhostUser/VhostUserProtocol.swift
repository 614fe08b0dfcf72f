/// Request codes of the vhost-user protocol (front-end to back-end) that obd knows.
public enum VhostUserRequest {
    public static let getFeatures: UInt32 = 1
    public static let setFeatures: UInt32 = 2
    public static let setOwner: UInt32 = 3
    public static let resetOwner: UInt32 = 4
    public static let setMemTable: UInt32 = 5
    public static let setLogBase: UInt32 = 6
    public static let setLogFD: UInt32 = 7
    public static let setVringNum: UInt32 = 8
    public static let setVringAddr: UInt32 = 9
    public static let setVringBase: UInt32 = 10
    public static let getVringBase: UInt32 = 11
    public static let setVringKick: UInt32 = 12
    public static let setVringCall: UInt32 = 13
    public static let setVringErr: UInt32 = 14
    public static let getProtocolFeatures: UInt32 = 15
    public static let setProtocolFeatures: UInt32 = 16
    public static let getQueueNum: UInt32 = 17
    public static let setVringEnable: UInt32 = 18
    public static let getConfig: UInt32 = 24
    public static let setConfig: UInt32 = 25
    public static let getInflightFD: UInt32 = 31
    public static let setInflightFD: UInt32 = 32

    static let names: [UInt32: String] = [
        1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER", 5: "SET_MEM_TABLE",
        6: "SET_LOG_BASE", 7: "SET_LOG_FD", 8: "SET_VRING_NUM", 9: "SET_VRING_ADDR", 10: "SET_VRING_BASE",
        11: "GET_VRING_BASE", 12: "SET_VRING_KICK", 13: "SET_VRING_CALL", 14: "SET_VRING_ERR",
        15: "GET_PROTOCOL_FEATURES", 16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE",
        24: "GET_CONFIG", 25: "SET_CONFIG", 31: "GET_INFLIGHT_FD", 32: "SET_INFLIGHT_FD",
    ]

    /// The request's protocol name, or "request N" for one obd does not know.
    public static func name(_ r: UInt32) -> String { names[r] ?? "request \(r)" }
}

/// Header flag bits.
public enum VhostUserFlags {
    /// The protocol version lives in the low two bits; only version 1 exists.
    public static let versionMask: UInt32 = 0x3
    public static let version: UInt32 = 0x1
    /// Set on every message the back-end sends in answer.
    public static let reply: UInt32 = 0x4
    /// The front-end wants an acknowledgement (with REPLY_ACK negotiated).
    public static let needReply: UInt32 = 0x8
}

/// Feature bits: virtio transport, vhost-user, and virtio-blk.
public enum VirtioFeature {
    public static let blkSizeMax: UInt64 = 1 << 1
    public static let blkSegMax: UInt64 = 1 << 2
    public static let blkReadOnly: UInt64 = 1 << 5
    public static let blkBlockSize: UInt64 = 1 << 6
    public static let blkFlush: UInt64 = 1 << 9
    public static let blkMultiQueue: UInt64 = 1 << 12
    public static let blkDiscard: UInt64 = 1 << 13
    public static let blkWriteZeroes: UInt64 = 1 << 14
    public static let ringIndirectDesc: UInt64 = 1 << 28
    public static let ringEventIdx: UInt64 = 1 << 29
    /// vhost-user's own bit: the protocol-feature messages exist, rings start disabled.
    public static let protocolFeatures: UInt64 = 1 << 30
    public static let version1: UInt64 = 1 << 32
}

/// Protocol-feature bits (GET/SET_PROTOCOL_FEATURES).
public enum VhostUserProtocolFeature {
    public static let multiQueue: UInt64 = 1 << 0
    public static let replyAck: UInt64 = 1 << 3
    public static let config: UInt64 = 1 << 9
    /// Shared memory recording in-flight requests, so a restarted back-end completes them.
    public static let inflightShmem: UInt64 = 1 << 12
}

/// Protocol limits obd enforces on every message.
public enum VhostUserLimits {
    /// Largest payload any request obd knows can carry (GET_CONFIG: 12 + 256).
    public static let maxPayload = 4096
    /// File descriptors one message may carry (the memory table's region limit).
    public static let maxFDs = 8
    /// Regions in one memory table.
    public static let maxRegions = 8
    /// Size of the device configuration space a GET_CONFIG may address.
    public static let maxConfigSize = 256
    /// The largest split virtqueue.
    public static let maxQueueSize = 32768
    /// Queues obd serves at most (the index field of vring messages has 8 bits).
    public static let maxQueues = 64
}
