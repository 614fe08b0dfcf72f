// Writes the crash-test workload to a writable layer until it is killed.
// Usage: obd-crash-writer DATA INDEX SEED
// Prints "A <n>" after operation n is acknowledged and "F <n>" after a flush that
// covers operations 0..<n, each with one unbuffered write(2).
import Glibc
import LSMT
import TestSupport

func say(_ s: String) {
    var line = Array((s + "\n").utf8)
    _ = line.withUnsafeMutableBytes { write(1, $0.baseAddress!, $0.count) }
}

let args = CommandLine.arguments
guard args.count == 4, let seed = UInt64(args[3]) else {
    say("usage: obd-crash-writer DATA INDEX SEED")
    exit(2)
}
do {
    let layer = try WritableLayer.open(dataPath: args[1], indexPath: args[2])
    var i = 0
    while true {
        let op = CrashWorkload.operation(seed: seed, index: i)
        if op.discard {
            try layer.discard(offset: op.offset, length: UInt64(op.length))
        } else {
            try op.bytes().withUnsafeBytes { try layer.write($0, at: op.offset) }
        }
        say("A \(i)")
        i += 1
        if i % CrashWorkload.flushEvery == 0 {
            try layer.flush()
            say("F \(i)")
        }
    }
} catch {
    say("E \(error)")
    exit(1)
}
