import CNL
import Glibc

/// The kernel's TCMU generic-netlink interface (family "TCM-USER", multicast group
/// "config"): device added / removed / reconfig events, and the *_DONE replies the
/// kernel waits for once the daemon has said it supports them.
final class TCMUNetlink: @unchecked Sendable {
    // Commands and attributes from linux/target_core_user.h.
    static let cmdAddedDevice: UInt8 = 1, cmdRemovedDevice: UInt8 = 2, cmdReconfigDevice: UInt8 = 3
    static let cmdAddedDeviceDone: UInt8 = 4, cmdRemovedDeviceDone: UInt8 = 5, cmdReconfigDeviceDone: UInt8 = 6
    static let cmdSetFeatures: UInt8 = 7
    static let attrDevice: Int32 = 1, attrMinor: Int32 = 2, attrDevCfg: Int32 = 4, attrDevSize: Int32 = 5
    static let attrWriteCache: Int32 = 6, attrCmdStatus: Int32 = 7, attrDeviceID: Int32 = 8, attrSuppKernCmdReply: Int32 = 9
    static let attrMax: Int32 = 9
    static let genlVersion: UInt8 = 2

    struct Event {
        var command: UInt8
        var device: String
        var minor: UInt32
        var deviceID: UInt32?
        var devConfig: String?
    }

    enum Failure: Error, CustomStringConvertible {
        case setup(String)
        var description: String { switch self { case let .setup(s): return "TCMU netlink: \(s)" } }
    }

    private let events: OpaquePointer      // multicast listener
    private let control: OpaquePointer     // request/ack socket for replies
    private let family: Int32
    private var handler: ((Event) -> Void)?
    /// Whether the kernel accepted SET_FEATURES (it then waits for our *_DONE replies).
    private(set) var kernelWaitsForReplies = false

    init() throws {
        guard let ev = nl_socket_alloc(), let ctl = nl_socket_alloc() else { throw Failure.setup("cannot allocate sockets") }
        events = ev
        control = ctl
        for s in [ev, ctl] {
            let rc = genl_connect(s)
            guard rc == 0 else { throw Failure.setup("connect: \(String(cString: nl_geterror(rc)))") }
        }
        family = genl_ctrl_resolve(ctl, "TCM-USER")
        guard family >= 0 else { throw Failure.setup("family TCM-USER not found (is target_core_user loaded?)") }
        let group = genl_ctrl_resolve_grp(ctl, "TCM-USER", "config")
        guard group >= 0 else { throw Failure.setup("multicast group 'config' not found") }
        nl_socket_disable_seq_check(ev)
        guard nl_socket_add_membership(ev, group) == 0 else { throw Failure.setup("cannot join the config group") }
        nl_socket_set_buffer_size(ev, 4 << 20, 0)
    }

    deinit {
        nl_socket_free(events)
        nl_socket_free(control)
    }

    /// Tells the kernel to wait for replies (makes configfs `enable` block until the
    /// image is open). Returns false on a kernel that does not support it.
    @discardableResult
    func requestReplies() -> Bool {
        guard let msg = nlmsg_alloc() else { return false }
        defer { nlmsg_free(msg) }
        guard genlmsg_put(msg, UInt32(NL_AUTO_PORT), UInt32(NL_AUTO_SEQ), family, 0, 0, Self.cmdSetFeatures, Self.genlVersion) != nil,
              nla_put_u8(msg, Self.attrSuppKernCmdReply, 1) == 0 else { return false }
        guard nl_send_auto(control, msg) >= 0 else { return false }
        kernelWaitsForReplies = nl_wait_for_ack(control) == 0
        return kernelWaitsForReplies
    }

    /// Sends the *_DONE reply for an event.
    func reply(to event: Event, status: Int32) {
        guard kernelWaitsForReplies, let id = event.deviceID else { return }
        let done: UInt8
        switch event.command {
        case Self.cmdAddedDevice: done = Self.cmdAddedDeviceDone
        case Self.cmdRemovedDevice: done = Self.cmdRemovedDeviceDone
        case Self.cmdReconfigDevice: done = Self.cmdReconfigDeviceDone
        default: return
        }
        guard let msg = nlmsg_alloc() else { return }
        defer { nlmsg_free(msg) }
        guard genlmsg_put(msg, UInt32(NL_AUTO_PORT), UInt32(NL_AUTO_SEQ), family, 0, 0, done, Self.genlVersion) != nil,
              nla_put_s32(msg, Self.attrCmdStatus, status) == 0,
              nla_put_u32(msg, Self.attrDeviceID, id) == 0 else { return }
        if nl_send_auto(control, msg) >= 0 { _ = nl_wait_for_ack(control) }
    }

    /// Receives events forever (or until the socket fails), calling `handler` for each.
    func run(_ handler: @escaping (Event) -> Void) {
        self.handler = handler
        let me = Unmanaged.passUnretained(self).toOpaque()
        nl_socket_modify_cb(events, NL_CB_VALID, NL_CB_CUSTOM, { msg, arg in
            guard let msg, let arg else { return Int32(NL_OK.rawValue) }
            let netlink = Unmanaged<TCMUNetlink>.fromOpaque(arg).takeUnretainedValue()
            netlink.handle(msg)
            return Int32(NL_OK.rawValue)
        }, me)
        while true {
            let rc = nl_recvmsgs_default(events)
            if rc < 0 && rc != -Int32(NLE_INTR) && rc != -Int32(NLE_AGAIN) && rc != -Int32(NLE_NOMEM) { return }
        }
    }

    private func handle(_ msg: OpaquePointer) {
        guard let nlh = nlmsg_hdr(msg), let gnlh = genlmsg_hdr(nlh) else { return }
        var attrs = [OpaquePointer?](repeating: nil, count: Int(Self.attrMax) + 1)
        let rc = attrs.withUnsafeMutableBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafeMutablePointer<nlattr>?.self, capacity: buf.count) {
                genlmsg_parse(nlh, 0, $0, Self.attrMax, nil)
            }
        }
        guard rc == 0 else { return }
        func attr(_ i: Int32) -> UnsafeMutablePointer<nlattr>? { attrs[Int(i)].map { UnsafeMutablePointer<nlattr>($0) } }
        guard let dev = attr(Self.attrDevice), let minor = attr(Self.attrMinor), let s = nla_get_string(dev) else { return }
        var event = Event(command: gnlh.pointee.cmd, device: String(cString: s), minor: nla_get_u32(minor))
        if let id = attr(Self.attrDeviceID) { event.deviceID = nla_get_u32(id) }
        if let cfg = attr(Self.attrDevCfg), let c = nla_get_string(cfg) { event.devConfig = String(cString: c) }
        if gnlh.pointee.version > 1 && event.deviceID == nil { return }
        handler?(event)
    }
}
