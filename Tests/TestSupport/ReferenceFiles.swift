import Crypto
import Glibc
import Threading

/// Locates the overlaybd reference files (`../shared/testdata/overlaybd-ref`, or
/// `$OBD_REFERENCE_DIR`). They are read-only: tests copy anything they write to.
///
/// Outside CI a missing folder disables the tests that need it; under CI (`CI=true`)
/// those tests run and fail.
public enum ReferenceFiles {
    public static let root: String = {
        if let p = getenv("OBD_REFERENCE_DIR") { return String(cString: p) }
        // Tests/TestSupport/ReferenceFiles.swift -> package root -> ../shared/...
        var dir = #filePath
        for _ in 0..<3 { dir = String(dir[..<dir.lastIndex(of: "/")!]) }
        return dir + "/../shared/testdata/overlaybd-ref"
    }()

    public static var isCI: Bool {
        guard let v = getenv("CI") else { return false }
        return String(cString: v) == "true"
    }

    /// Whether the reference folder is present.
    public static var present: Bool { access(root + "/SHA256SUMS", R_OK) == 0 }

    /// For `.enabled(if:)`: run when present, and always under CI (where absence fails).
    public static var shouldRun: Bool { present || isCI }

    /// The absolute path of a reference file; throws when the folder is missing.
    public static func path(_ relative: String) throws -> String {
        guard present else { throw MissingReference(root: root) }
        return root + "/" + relative
    }

    public struct MissingReference: Error, CustomStringConvertible {
        public let root: String
        public var description: String { "overlaybd reference files not found at \(root) (set OBD_REFERENCE_DIR)" }
    }
}

/// SplitMix64, the generator the reference README uses for its inputs.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` bytes of the stream, little-endian words.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count {
            let w = next()
            for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: w >> (8 * i))) }
        }
        out.removeLast(out.count - count)
        return out
    }
}

/// SHA-256 helpers for comparing with the reference README's hashes.
public enum Digest {
    public static func sha256(_ bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    static func hex(_ d: SHA256.Digest) -> String {
        d.map { String(format02x: $0) }.joined()
    }

    /// Streams `size` bytes from `read(buffer, offset) -> count` into SHA-256.
    public static func sha256(size: UInt64, chunk: Int = 4 << 20,
                              read: (UnsafeMutableRawBufferPointer, UInt64) throws -> Int) throws -> String {
        var h = SHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < size {
            let want = Int(min(UInt64(chunk), size - off))
            let n = try read(UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]), off)
            precondition(n == want, "short read at \(off)")
            h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            off += UInt64(n)
        }
        return hex(h.finalize())
    }
}

extension String {
    init(format02x v: UInt8) {
        let d = Array("0123456789abcdef")
        self = String([d[Int(v >> 4)], d[Int(v & 15)]])
    }
}

/// A fresh temporary directory, removed by `remove()`.
public final class TemporaryDirectory {
    public let path: String

    public init(_ prefix: String = "obd-test") {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: p!)
    }

    public func remove() {
        _ = run(["/bin/rm", "-rf", path])
    }

    public func file(_ name: String) -> String { path + "/" + name }
}

/// Starts `argv` with its standard streams redirected to files (nil leaves one as is;
/// `stderr == stdout` sends both to one file). Returns the pid, or nil if it cannot start.
public func spawn(_ argv: [String], stdin: String? = nil, stdout: String? = nil, stderr: String? = nil) -> pid_t? {
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let stdin { posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0) }
    if let stdout { posix_spawn_file_actions_addopen(&actions, 1, stdout, O_CREAT | O_WRONLY | O_TRUNC, 0o600) }
    if let stderr {
        if stderr == stdout {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 2, stderr, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        }
    }
    let cargs = argv.map { s in s.withCString { strdup($0) } } + [nil]
    defer { cargs.forEach { free($0) } }
    return posix_spawn(&pid, argv[0], &actions, nil, cargs, environ) == 0 ? pid : nil
}

/// Runs a program; returns (exit status, stdout, stderr).
@discardableResult
public func run(_ argv: [String], stdin: String? = nil) -> (status: Int32, out: String, err: String) {
    let outPath = "/tmp/obd-run-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let errPath = outPath + ".err", inPath = outPath + ".in"
    defer { unlink(outPath); unlink(errPath); unlink(inPath) }
    if let stdin {
        let fd = open(inPath, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        _ = stdin.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
    guard let pid = spawn(argv, stdin: stdin == nil ? nil : inPath, stdout: outPath, stderr: errPath) else {
        return (127, "", "spawn \(argv[0]) failed")
    }
    var status: Int32 = 0
    _ = retryingInterrupted { waitpid(pid, &status, 0) }
    let exit = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return (exit, readText(outPath), readText(errPath))
}

/// The whole content of a small file as text ("" if missing).
public func readText(_ path: String) -> String {
    guard let f = fopen(path, "r") else { return "" }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Path of a product built next to the running test binary (e.g. "obd").
public func builtProduct(_ name: String) -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    let exe = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    var dir = String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)])
    // The runner may sit inside a bundle folder; walk up to the build folder.
    while !dir.isEmpty && access(dir + "/" + name, X_OK) != 0 {
        guard let slash = dir.lastIndex(of: "/") else { break }
        dir = String(dir[..<slash])
    }
    return dir + "/" + name
}

/// Starts `flock(1)` holding `lockPath` (another process owning a folder) and returns
/// its pid once the lock is taken: flock runs the ready command only while it holds it.
public func holdLockInAnotherProcess(_ lockPath: String, seconds: Int = 60) throws -> pid_t {
    let ready = lockPath + ".held"
    unlink(ready)
    guard let pid = spawn(["/usr/bin/flock", lockPath, "/bin/sh", "-c", "touch '\(ready)' && exec sleep \(seconds)"]) else {
        throw LocalRegistry.Failure(description: "cannot start flock")
    }
    // Bounded: flock takes a free lock at once.
    let deadline = monotonicSeconds() + 30
    while access(ready, F_OK) != 0 {
        guard monotonicSeconds() < deadline else {
            kill(pid, SIGKILL)
            throw LocalRegistry.Failure(description: "flock did not take \(lockPath)")
        }
        usleep(5_000)
    }
    unlink(ready)
    return pid
}
