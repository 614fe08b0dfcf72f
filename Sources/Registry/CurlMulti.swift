import CCurl
import Glibc
import Synchronization
import Threading

/// All HTTP transfers of the process run on one libcurl multi handle, driven by one
/// thread: many range requests are in flight at once over a shared pool of reused
/// connections, while each caller simply blocks until its own transfer is done.
final class CurlMulti: @unchecked Sendable {
    static let shared = CurlMulti()

    private let multi: UnsafeMutableRawPointer
    private let pending = Mutex<[Transfer]>([])
    /// Transfers on the multi handle, by easy handle (touched by the driver thread only).
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]

    /// One waiting transfer.
    final class Transfer: @unchecked Sendable {
        let easy: UnsafeMutableRawPointer
        /// The result once the transfer is done (nil while it runs).
        private let state = ConditionLock<CURLcode?>(nil)

        init(easy: UnsafeMutableRawPointer) { self.easy = easy }

        func finish(_ code: CURLcode) {
            state.withLock { $0 = code }
            state.notifyOne()
        }

        func wait() -> CURLcode {
            state.withLock(when: { $0 != nil }) { $0! }
        }
    }

    /// Whether the driver thread runs (if it could not be started, every transfer fails).
    /// (Written once, in `init`.)
    private var driving = false

    private init() {
        _ = HTTPTransport.globalInit
        multi = curl_multi_init()
        // Up to 16 parallel connections per host; HTTP/1.1 keep-alive reuses them.
        obd_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16)
        obd_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, 64)
        // The process-wide instance lives as long as the process: its thread never ends.
        driving = (try? NamedThread.detach(name: "obd-curl") { [self] in drive() }) != nil
    }

    /// Runs the configured easy handle to completion on the multi handle.
    func perform(_ easy: UnsafeMutableRawPointer) -> CURLcode {
        guard driving else { return CURLE_FAILED_INIT }
        let t = Transfer(easy: easy)
        pending.withLock { $0.append(t) }
        curl_multi_wakeup(multi)
        return t.wait()
    }

    private func drive() {
        var running: Int32 = 0
        while true {
            for t in pending.withLock({ p -> [Transfer] in let all = p; p.removeAll(); return all }) {
                let rc = curl_multi_add_handle(multi, t.easy)
                if rc != CURLM_OK {
                    t.finish(CURLE_FAILED_INIT)
                } else {
                    active[t.easy] = t
                }
            }
            curl_multi_perform(multi, &running)
            var left: Int32 = 0
            while let msg = curl_multi_info_read(multi, &left) {
                guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle else { continue }
                let code = obd_curl_msg_result(msg)
                curl_multi_remove_handle(multi, easy)
                active.removeValue(forKey: easy)?.finish(code)
            }
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
    }
}
