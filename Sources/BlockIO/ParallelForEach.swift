import Glibc
import Synchronization

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` new threads. After the
/// first error no new index is started; that error is rethrown once all threads are done.
/// `progress`, if given, is called on the calling thread about every 100 ms meanwhile.
public func parallelForEach(count: Int, threads: Int, progress: (() -> Void)? = nil,
                            _ body: @escaping @Sendable (Int) throws -> Void) throws {
    guard count > 0 else { return }
    final class State: @unchecked Sendable {
        let next = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        let failure = Mutex<(any Error)?>(nil)
    }
    let st = State()
    let workers = max(1, min(threads, count))
    for _ in 0..<workers {
        startDetachedThread {
            while st.failure.withLock({ $0 == nil }) {
                let i = st.next.add(1, ordering: .relaxed).oldValue
                guard i < count else { break }
                do { try body(i) } catch { st.failure.withLock { $0 = $0 ?? error } }
            }
            st.finished.add(1, ordering: .releasing)
        }
    }
    var last = monotonicSeconds()
    while st.finished.load(ordering: .acquiring) < workers {
        usleep(5_000)
        if let progress, monotonicSeconds() - last >= 0.1 {
            progress()
            last = monotonicSeconds()
        }
    }
    if let f = st.failure.withLock({ $0 }) { throw f }
}
