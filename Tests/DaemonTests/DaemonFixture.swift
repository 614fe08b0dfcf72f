import BlockIO
@testable import Daemon
import Glibc
import Image
import LSMT
import Synchronization
import TestSupport
import Threading

/// A temporary folder with a one-lower image (`image.json` over a committed layer of
/// seeded bytes) and a registry over it.
final class DaemonFixture: @unchecked Sendable {
    static let size: UInt64 = 4 << 20
    let dir = TemporaryDirectory("obd-daemon")
    let content: [UInt8]
    let lines = LogLines()
    var registry: DiskRegistry!

    final class LogLines: Sendable {
        let lines = Mutex<[String]>([])
        func append(_ s: String) { lines.withLock { $0.append(s) } }
    }

    init(state: Bool = true) throws {
        var g = SplitMix64(seed: 29)
        content = g.bytes(Int(Self.size))
        let base = try WritableLayer.create(dataPath: dir.file("bd"), indexPath: dir.file("bi"), virtualSize: Self.size)
        try content.withUnsafeBytes { try base.write($0, at: 0) }
        let out = try LocalFile(path: dir.file("lower"), mode: .createExclusive)
        try LayerCommit.write(segments: base.segments, sources: [base.dataFile], virtualSize: Self.size, defaultParent: .null,
                              args: CommitArgs(), into: FileAppendSink(file: out))
        try writeText("image.json", #"{"lowers":[{"file":"lower"}]}"#)
        registry = makeRegistry(state: state)
    }

    deinit {
        registry.shutdown()
        dir.remove()
    }

    func makeRegistry(state: Bool = true) -> DiskRegistry {
        let lines = self.lines
        return DiskRegistry(options: .init(statePath: state ? dir.file("state.json") : nil), workers: 4) { lines.append($0) }
    }

    func writeText(_ name: String, _ text: String) throws {
        let f = try LocalFile(path: dir.file(name), mode: .createTruncate)
        try f.writeBytes(Array(text.utf8), at: 0)
    }

    /// A spec over `image.json` with a socket in the fixture's folder.
    func spec(_ id: String, writable: Bool = false, nbd: Bool = true, config: String = "image.json", queues: Int? = nil) -> DiskSpec {
        DiskSpec(id: id, config: dir.file(config), mode: writable ? .writable : .readOnly,
                 frontend: .init(type: nbd ? .nbd : .vhostUser, socket: dir.file(id + ".sock"), queues: nbd ? nil : queues),
                 upper: writable ? dir.file("upper-" + id) : nil)
    }

    /// A connected NBD client in transmission on disk `id`'s socket.
    func nbd(_ id: String) throws -> NBDClient {
        let c = try NBDClient(socketPath: dir.file(id + ".sock"))
        try c.go(name: id)
        return c
    }
}

/// Open file descriptors of this process.
func openFDs() -> Int { directoryEntries("/proc/self/fd") }

/// Threads of this process.
func threadCount() -> Int { directoryEntries("/proc/self/task") }

/// Resident set size in KiB (VmRSS of /proc/self/status).
func residentKiB() -> Int {
    let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 16384)
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return 0 }
    let text = String(decoding: buf[0..<n], as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(String(line.filter(\.isNumber))) ?? 0
    }
    return 0
}

/// Polls `condition` until it holds or `timeout` seconds pass (for effects that follow
/// a thread's exit, such as the last reference to a file going away).
func eventually(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + timeout
    while !condition() {
        if monotonicSeconds() > deadline { return false }
        usleep(1000)
    }
    return true
}

/// How many of this process's descriptors are open on `path`.
func descriptors(openOn path: String) -> Int {
    guard let d = opendir("/proc/self/fd") else { return 0 }
    defer { closedir(d) }
    var n = 0
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var buf = [CChar](repeating: 0, count: 4096)
        let len = readlink("/proc/self/fd/" + name, &buf, buf.count - 1)
        if len > 0, String(decoding: buf[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self) == path { n += 1 }
    }
    return n
}

private func directoryEntries(_ path: String) -> Int {
    guard let d = opendir(path) else { return 0 }
    defer { closedir(d) }
    var n = 0
    while let e = readdir(d) {
        let first = withUnsafeBytes(of: e.pointee.d_name) { $0[0] }
        if first != UInt8(ascii: ".") { n += 1 }
    }
    return n
}
