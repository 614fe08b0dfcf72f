import ArgumentParser
import BlockIO
import Glibc
import Threading

/// Runs `body`, turning any error into one clear line on stderr and exit code 1.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        throw e
    } catch {
        printError("obd: error: \(error)")
        throw ExitCode.failure
    }
}

func printError(_ text: String) {
    var line = text
    line += "\n"
    writeStandardError(line)
}

/// Opens the output file: exclusive unless `force`, in which case an existing file is removed first.
func createOutput(_ path: String, force: Bool) throws -> LocalFile {
    if force { unlink(path) }
    do {
        return try LocalFile(path: path, mode: .createExclusive)
    } catch BlockIOError.open(let p, let e) where e == EEXIST {
        throw CLIError("\(p): output exists (use -f to replace it)")
    }
}

/// A plain error message for the CLI.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// Progress on stderr when it is a terminal; silent otherwise.
final class Progress {
    private let label: String
    private let total: UInt64
    private let enabled: Bool
    private var lastPercent = -1

    init(_ label: String, total: UInt64) {
        self.label = label
        self.total = total
        enabled = isatty(2) != 0 && total > 0
    }

    func update(_ done: UInt64) {
        guard enabled else { return }
        let p = Int(min(100, done * 100 / max(total, 1)))
        if p != lastPercent {
            lastPercent = p
            printErrorNoNewline("\r\(label): \(p)%")
        }
    }

    func finish() {
        if enabled && lastPercent >= 0 { printErrorNoNewline("\r\(label): done   \n") }
    }

    private func printErrorNoNewline(_ s: String) {
        writeStandardError(s)
    }
}

/// Writes text to file descriptor 2 without going through the C `stderr` global.
func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { b in retryingInterrupted { Glibc.write(2, b.baseAddress! + done, b.count - done) } }
        if n <= 0 { return }
        done += n
    }
    bytes.removeAll()
}
