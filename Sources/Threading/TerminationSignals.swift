import Glibc

/// SIGTERM and SIGINT, taken by one thread with `sigwait` instead of a handler: the
/// services block them before they start threads (which inherit the mask), then wait
/// for one and shut down in order. SIGPIPE is ignored (a peer closing a socket is an
/// error result, not process death).
public struct TerminationSignals: Sendable {
    private let set: sigset_t

    private init(set: sigset_t) { self.set = set }

    /// Blocks SIGTERM and SIGINT in the calling thread and ignores SIGPIPE.
    public static func block() -> TerminationSignals {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        return TerminationSignals(set: set)
    }

    /// Waits for SIGTERM or SIGINT; returns its number.
    public func wait() -> Int32 {
        var s = set
        var sig: Int32 = 0
        sigwait(&s, &sig)
        return sig
    }
}
