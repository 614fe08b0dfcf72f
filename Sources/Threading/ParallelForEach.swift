import Synchronization

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` new threads named
/// `name`. After the first error no new index is started; that error is rethrown once
/// all threads have ended. `progress`, if given, is called on the calling thread about
/// every 100 ms meanwhile.
public func parallelForEach(count: Int, threads: Int, name: String = "obd-parallel", progress: (() -> Void)? = nil,
                            _ body: @escaping @Sendable (Int) throws -> Void) throws {
    guard count > 0 else { return }
    final class State: Sendable {
        let next = Atomic<Int>(0)
        let failure = Mutex<(any Error)?>(nil)
        let running: ConditionLock<Int>
        init(_ n: Int) { running = ConditionLock(n) }
    }
    let workers = max(1, min(threads, count))
    let st = State(workers)
    var handles: [JoinHandle] = []
    var startFailure: (any Error)?
    for w in 0..<workers {
        do {
            handles.append(try NamedThread.spawn(name: "\(name)-\(w)") {
                while st.failure.withLock({ $0 == nil }) {
                    let i = st.next.add(1, ordering: .relaxed).oldValue
                    guard i < count else { break }
                    do { try body(i) } catch { st.failure.withLock { $0 = $0 ?? error } }
                }
                st.running.withLock { $0 -= 1 }
                st.running.notifyAll()
            })
        } catch {
            // Fewer threads than asked still finish the work; none cannot.
            st.running.withLock { $0 -= 1 }
            startFailure = error
        }
    }
    if handles.isEmpty, let startFailure { throw startFailure }
    if let progress {
        while st.running.withLock(when: { $0 == 0 }, deadline: monotonicSeconds() + 0.1, { _ in true }) == nil {
            progress()
        }
    }
    for h in handles { h.join() }
    if let f = st.failure.withLock({ $0 }) { throw f }
}
