import Glibc
import Synchronization
import Threading

/// What a finished recording wrote.
public struct TraceRecordSummary: Sendable, Equatable {
    /// Records in the trace file.
    public var records: Int
    /// Reads left out because the recording was full.
    public var dropped: Int
    /// Sum of the records' counts.
    public var bytes: UInt64

    public init(records: Int, dropped: Int, bytes: UInt64) {
        self.records = records
        self.dropped = dropped
        self.bytes = bytes
    }
}

/// overlaybd's record protocol around a `TraceRecorder`, for one trace path:
///
/// 1. `start` creates `<path>.lock` with `O_EXCL` (a leftover `<path>.ok` is removed
///    first) and begins recording;
/// 2. a thread checks about once a second whether `<path>.lock` still exists;
/// 3. when it is gone, or `stop` is called (the image closes), recording ends: the trace
///    is written to `path` (header with checksum; through `<path>.tmp` and a rename),
///    `<path>.lock` is unlinked and `<path>.ok` is created with `O_EXCL`, the signal
///    that the trace is complete.
public final class TraceRecordSession: Sendable {
    public let path: String
    public let recorder: TraceRecorder
    public var lockPath: String { path + ".lock" }
    public var okPath: String { path + ".ok" }

    /// Set by `stop`; the watcher sleeps on it between checks of the lock file.
    private let stopRequested = ConditionLock(false)
    private let watcher = Mutex<JoinHandle?>(nil)
    private let outcome = Mutex<Result<TraceRecordSummary, TraceError>?>(nil)
    private let log: @Sendable (String) -> Void

    private init(path: String, recorder: TraceRecorder, log: @escaping @Sendable (String) -> Void) {
        self.path = path
        self.recorder = recorder
        self.log = log
    }

    /// Creates the lock file and begins recording into `recorder`.
    /// - Parameters:
    ///   - pollInterval: how often the lock file is checked (overlaybd: 1 s).
    ///   - log: receives one line when the recording ends, and any failure.
    public static func start(path: String, recorder: TraceRecorder, pollInterval: Double = 1,
                             log: @escaping @Sendable (String) -> Void = { _ in }) throws(TraceError) -> TraceRecordSession {
        let s = TraceRecordSession(path: path, recorder: recorder, log: log)
        unlink(s.okPath)
        let fd = Glibc.open(s.lockPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            let e = errno
            if e == EEXIST { throw .lockExists(path: s.lockPath) }
            throw .io(path: s.lockPath, operation: "create", errno: e)
        }
        close(fd)
        recorder.begin()
        do {
            let handle = try NamedThread.spawn(name: "obd-trace-lock") { [s] in
                while s.stopRequested.withLock(when: { $0 }, deadline: monotonicSeconds() + pollInterval, { _ in true }) == nil {
                    if access(s.lockPath, F_OK) != 0 {
                        s.finish(reason: "\(s.lockPath) was removed")
                        return
                    }
                }
            }
            s.watcher.withLock { $0 = handle }
        } catch {
            _ = recorder.finish()
            unlink(s.lockPath)
            throw .io(path: s.lockPath, operation: "start the lock watcher thread", errno: (error as? NamedThread.StartError)?.errno ?? EAGAIN)
        }
        return s
    }

    /// Whether the trace has been written (or writing it failed).
    public var isFinished: Bool { outcome.withLock { $0 != nil } }

    /// The summary once finished; nil while recording. Throws the error if writing failed.
    public func result() throws(TraceError) -> TraceRecordSummary? {
        switch outcome.withLock({ $0 }) {
        case nil: return nil
        case let .success(s)?: return s
        case let .failure(e)?: throw e
        }
    }

    /// Ends the recording now if it still runs (writes the trace, unlinks the lock,
    /// creates `.ok`), and waits for the watcher thread to exit. Idempotent.
    @discardableResult
    public func stop() throws(TraceError) -> TraceRecordSummary {
        finish(reason: "the image closes")
        stopRequested.withLock { $0 = true }
        stopRequested.notifyAll()
        if let h = watcher.withLock({ h -> JoinHandle? in defer { h = nil }; return h }), !h.isCurrentThread { h.join() }
        switch outcome.withLock({ $0 })! {
        case let .success(s): return s
        case let .failure(e): throw e
        }
    }

    private func finish(reason: String) {
        outcome.withLock { out in
            guard out == nil else { return }
            let dropped = recorder.droppedCount
            let records = recorder.finish()
            do throws(TraceError) {
                try TraceFormat.write(records, to: path)
                unlink(lockPath)
                let fd = Glibc.open(okPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                guard fd >= 0 else { throw .io(path: okPath, operation: "create", errno: errno) }
                close(fd)
                let s = TraceRecordSummary(records: records.count, dropped: dropped, bytes: records.reduce(0) { $0 + $1.count })
                log("trace recording ended (\(reason)): \(s.records) records, \(s.bytes) bytes written to \(path)"
                    + (dropped > 0 ? "; \(dropped) reads beyond the limit of \(recorder.maxRecords) records were not recorded" : ""))
                out = .success(s)
            } catch {
                unlink(lockPath)
                log("trace recording ended (\(reason)) but the trace could not be written: \(error)")
                out = .failure(error)
            }
        }
    }
}
