import Synchronization
import Threading

/// The lowers open in the daemon, by identity, with a count of the disks using each.
///
/// Open-once per key: the first disk to need a key opens its image while later ones
/// for the same key wait for that open (with a deadline); disks of other keys are not
/// held up, because the table's lock is held only to find or insert an entry, never
/// while an image opens. When the last disk releases a key its image is closed.
public final class LowerCache: Sendable {
    private enum State {
        case opening
        case open(SharedLowers)
        case failed(DaemonError)
    }

    private final class Entry: @unchecked Sendable {
        let state = ConditionLock<State>(.opening)
        /// Disks holding (or waiting for) this entry; guarded by the table's lock.
        var refs = 0
    }

    private let table = Mutex<[LowersKey: Entry]>([:])
    private let openCount = Atomic<Int>(0)

    public init() {}

    /// Images opened so far (one per key, plus reopenings after a key was let go).
    public var opens: Int { openCount.load(ordering: .relaxed) }

    /// Keys open now, with the number of disks on each.
    public var users: [LowersKey: Int] { table.withLock { $0.mapValues(\.refs) } }

    /// The lowers of `key`: already open, being opened by another add (waited for up
    /// to `timeout` seconds), or opened now with `open`. Each successful call must be
    /// paired with one `release(key)`.
    public func acquire(_ key: LowersKey, timeout: Double,
                        open: () throws(DaemonError) -> SharedLowers) throws(DaemonError) -> SharedLowers {
        let (entry, mine) = table.withLock { t -> (Entry, Bool) in
            if let e = t[key] {
                e.refs += 1
                return (e, false)
            }
            let e = Entry()
            e.refs = 1
            t[key] = e
            return (e, true)
        }
        if mine {
            do {
                let lowers = try open()
                openCount.add(1, ordering: .relaxed)
                entry.state.withLock { $0 = .open(lowers) }
                entry.state.notifyAll()
                return lowers
            } catch {
                // Later adds of this key try again; those waiting now get this error.
                table.withLock { t in if t[key] === entry { t[key] = nil } }
                entry.state.withLock { $0 = .failed(error) }
                entry.state.notifyAll()
                throw error
            }
        }
        let outcome = entry.state.withLock(when: { if case .opening = $0 { return false } else { return true } },
                                           deadline: monotonicSeconds() + timeout) { $0 }
        switch outcome {
        case let .open(lowers)?:
            return lowers
        case let .failed(error)?:
            throw error
        case .opening?, nil:
            _ = drop(key, entry)
            throw .timedOut("waiting \(Int(timeout)) s for another add to open the same lowers")
        }
    }

    /// Lets go of one use of `key`; the last one closes the image (outside the lock).
    public func release(_ key: LowersKey) {
        let closing: SharedLowers? = table.withLock { t in
            guard let e = t[key] else { return nil }
            return dropLocked(&t, key, e)
        }
        closing?.image.close()
    }

    private func drop(_ key: LowersKey, _ entry: Entry) -> SharedLowers? {
        let closing = table.withLock { t -> SharedLowers? in
            guard t[key] === entry else { return nil }
            return dropLocked(&t, key, entry)
        }
        closing?.image.close()
        return closing
    }

    private func dropLocked(_ t: inout [LowersKey: Entry], _ key: LowersKey, _ e: Entry) -> SharedLowers? {
        e.refs -= 1
        guard e.refs <= 0 else { return nil }
        t[key] = nil
        if case let .open(lowers) = e.state.withLock({ $0 }) { return lowers }
        return nil
    }
}
