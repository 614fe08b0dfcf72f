import Glibc
import LSMT
import TestSupport
import Testing
import Threading

/// Kills a writer process with SIGKILL at random moments and checks what survives.
@Suite("Crash safety of writable layers", .serialized)
struct CrashTests {
    struct Iteration {
        var acked = 0
        var flushed = 0
    }

    /// Runs the child until killed; returns what it reported.
    func runAndKill(data: String, index: String, seed: UInt64, afterMicroseconds delay: UInt32, log: String) throws -> Iteration {
        let exe = builtProduct("obd-crash-writer")
        let started = spawn([exe, data, index, String(seed)], stdout: log)
        #expect(started != nil, "cannot start \(exe)")
        guard let pid = started else { return Iteration() }
        usleep(delay)
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = retryingInterrupted { waitpid(pid, &status, 0) }
        var it = Iteration()
        for line in readText(log).split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.first == "E" { Issue.record("writer failed: \(line)") }
            guard parts.count == 2, let n = Int(parts[1]) else { continue }
            if parts[0] == "A" { it.acked = n + 1 }
            if parts[0] == "F" { it.flushed = n }
        }
        return it
    }

    func readDisk(_ layer: WritableLayer) throws -> [UInt8] {
        let stack = try LayerStack(lowers: [], upper: layer)
        var out = [UInt8](repeating: 0xEE, count: Int(CrashWorkload.diskSize))
        try out.withUnsafeMutableBytes { try stack.readExactly(into: $0, at: 0) }
        return out
    }

    @Test("append-only layer: every acknowledged write survives SIGKILL; later ones are all-or-nothing in order")
    func appendOnly() throws {
        try crashLoop(sparse: false, iterations: 40)
    }

    @Test("sparse layer: flushed writes survive SIGKILL; only the in-flight write may be torn at page granularity")
    func sparse() throws {
        try crashLoop(sparse: true, iterations: 25)
    }

    func crashLoop(sparse: Bool, iterations: Int) throws {
        let dir = TemporaryDirectory("obd-crash")
        defer { dir.remove() }
        let data = dir.file("data"), index = dir.file("index")
        _ = try WritableLayer.create(dataPath: data, indexPath: index, virtualSize: CrashWorkload.diskSize, sparse: sparse)
        var model = [UInt8](repeating: 0, count: Int(CrashWorkload.diskSize))
        var rng = SplitMix64(seed: sparse ? 77 : 42)
        var totalOps = 0
        var tornTails = 0
        for iteration in 0..<iterations {
            let seed = rng.next()
            let delay = UInt32(2_000 + rng.next() % 60_000)
            let it = try runAndKill(data: data, index: index, seed: seed, afterMicroseconds: delay, log: dir.file("log"))
            let layer = try WritableLayer.open(dataPath: data, indexPath: index)
            tornTails += layer.recoveredTornEntries
            let disk = try readDisk(layer)
            // Candidates: the model after the first p operations, for p from the last flush
            // to one past the last acknowledgement (the operation in flight).
            var state = model
            for i in 0..<it.flushed { CrashWorkload.operation(seed: seed, index: i).apply(to: &state) }
            // Operations can be no-ops (a discard of zeros), so several prefixes may give the
            // same disk: take the longest that matches.
            var matched: Int?
            var p = it.flushed
            while p <= it.acked + 1 {
                if state == disk { matched = p }
                if p == it.acked + 1 { break }
                let op = CrashWorkload.operation(seed: seed, index: p)
                if sparse && p == it.acked && !op.discard && matched == nil {
                    var next = state
                    op.apply(to: &next)
                    if pageMix(old: state, new: next, disk: disk, range: Int(op.offset)..<(Int(op.offset) + op.length)) {
                        matched = p
                        break
                    }
                }
                op.apply(to: &state)
                p += 1
            }
            guard let m = matched else {
                Issue.record("iteration \(iteration): disk matches no prefix between flushed \(it.flushed) and acked \(it.acked) + 1")
                return
            }
            if !sparse { #expect(m >= it.acked, "an acknowledged write was lost (matched \(m), acked \(it.acked))") }
            model = disk
            totalOps += m
        }
        #expect(totalOps > iterations, "the writer made too little progress to test anything")
        _ = tornTails
    }

    /// Whether `disk` equals `new` or `old` page by page inside `range`, and `old` elsewhere.
    func pageMix(old: [UInt8], new: [UInt8], disk: [UInt8], range: Range<Int>) -> Bool {
        if disk[..<range.lowerBound] != old[..<range.lowerBound] { return false }
        if disk[range.upperBound...] != old[range.upperBound...] { return false }
        var page = range.lowerBound / 4096 * 4096
        while page < range.upperBound {
            let r = max(page, range.lowerBound)..<min(page + 4096, range.upperBound)
            if disk[r] != old[r] && disk[r] != new[r] { return false }
            page += 4096
        }
        return true
    }
}
