import Glibc

/// sd_notify(3) without libsystemd: one datagram to `$NOTIFY_SOCKET` (nothing when
/// unset). The services (obd-tcmu, obd daemon) tell systemd they are ready or stopping.
public enum SystemdNotify {
    /// Sends `state` (e.g. "READY=1\nSTATUS=...") to the service manager, if any.
    public static func notify(_ state: String) {
        guard let env = getenv("NOTIFY_SOCKET") else { return }
        var path = String(cString: env)
        if path.hasPrefix("@") { path = "\0" + path.dropFirst() }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        _ = state.withCString { msg in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, msg, strlen(msg), 0, $0, len) }
            }
        }
    }
}
