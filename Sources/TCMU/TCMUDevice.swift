import BlockIO
import Glibc
import Image
import Threading

/// One TCMU device: its UIO ring mapped into memory, a thread waiting for the
/// kernel's doorbell, and the image's commands running on the shared worker pool.
final class TCMUDevice: @unchecked Sendable {
    let name: String
    let minor: UInt32
    let image: Image
    let disk: SCSIDisk
    private let fd: Int32
    private let map: UnsafeMutableRawPointer
    private let mapSize: Int
    private let ring: CommandRing
    private let pool: WorkerPool
    private let log: @Sendable (String) -> Void
    private let inFlight = InFlightLimit()
    private var stopping = false
    private var thread: JoinHandle?
    private var wake: [Int32] = [-1, -1]

    init(name: String, minor: UInt32, image: Image, disk: SCSIDisk, pool: WorkerPool, log: @escaping @Sendable (String) -> Void) throws {
        self.name = name
        self.minor = minor
        self.image = image
        self.disk = disk
        self.pool = pool
        self.log = log
        let sizeText = readSysfs("/sys/class/uio/uio\(minor)/maps/map0/size")
        guard let size = Int(sizeText.hasPrefix("0x") ? String(sizeText.dropFirst(2)) : sizeText, radix: sizeText.hasPrefix("0x") ? 16 : 10), size > 0 else {
            throw TCMUError.device(name, "cannot read the ring size of /dev/uio\(minor)")
        }
        fd = open("/dev/uio\(minor)", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw TCMUError.device(name, "/dev/uio\(minor): \(BlockIOError.text(errno))") }
        guard let m = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), m != MAP_FAILED else {
            let e = errno
            close(fd)
            throw TCMUError.device(name, "mmap /dev/uio\(minor): \(BlockIOError.text(e))")
        }
        map = m
        mapSize = size
        do {
            ring = try CommandRing(base: m, size: size)
        } catch {
            munmap(m, size)
            close(fd)
            throw TCMUError.device(name, "\(error)")
        }
        pipe(&wake)
    }

    deinit {
        munmap(map, mapSize)
        close(fd)
        close(wake[0])
        close(wake[1])
    }

    func start() throws {
        thread = try NamedThread.spawn(name: "obd-tcmu-\(name)") { [self] in loop() }
    }

    /// Starts serving a device another process served before (a restart or a crash): the
    /// commands it left in the ring go back to the kernel for a retry (RingTakeover).
    func start(takingOver control: (any RingControl)?) throws -> RingTakeover.Outcome {
        try RingTakeover.takeOver(ring: ring, control: control) { try start() }
    }

    /// Handles whatever is already in the ring, then waits for the doorbell.
    private func loop() {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)]
        while !stopping {
            dispatch(ring.fetch())
            let rc = poll(&fds, 2, -1)
            if rc < 0 && errno != EINTR { log("tcmu: \(name): poll failed: \(BlockIOError.text(errno))"); return }
            if fds[1].revents != 0 { return }
            if fds[0].revents & Int16(POLLIN) != 0 {
                var n: UInt32 = 0
                _ = read(fd, &n, 4)
            }
        }
    }

    private func dispatch(_ commands: [CommandRing.Command]) {
        for c in commands {
            inFlight.enter()
            let job = { [self] in
                let status = c.invalid ?? image.cancellation.run { disk.execute(cdb: c.cdb, data: c.data) }
                if c.invalid != nil {
                    log("tcmu: \(name): malformed ring entry: \(ring.lastMalformedEntry.map { String($0, radix: 16) }.joined(separator: " "))")
                } else if status.status != 0 && status != .invalidOpcode {
                    log("tcmu: \(name): command 0x\(String(c.cdb.first ?? 0, radix: 16)) -> \(status)")
                }
                ring.complete(id: c.id, status: status)
                var one: UInt32 = 0
                _ = write(fd, &one, 4)     // tell the kernel a completion is posted
                inFlight.leave()
            }
            // A pool that is shutting down (the service stops) does not take the
            // command: run it here, so the kernel still gets its completion.
            do { try pool.submit(job) } catch { job() }
        }
    }

    /// Stops taking commands, waits for the ones running, and flushes the image.
    func stop() {
        stopping = true
        var b: UInt8 = 1
        _ = write(wake[1], &b, 1)
        thread?.join()
        // Commands blocked on the registry (an outage under blockOnOutage) fail now
        // instead of holding the removal until the network returns.
        image.cancelFetches()
        inFlight.waitForAll()
        ring.skipTrailingPadding()
        do { try image.stack.flush() } catch { log("tcmu: \(name): flush on removal failed: \(error)") }
        image.close()
    }
}

/// The first line of a sysfs/configfs file, trimmed ("" if unreadable).
func readSysfs(_ path: String) -> String {
    guard let f = fopen(path, "r") else { return "" }
    defer { fclose(f) }
    var buf = [CChar](repeating: 0, count: 4096)
    guard fgets(&buf, Int32(buf.count), f) != nil else { return "" }
    var s = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while let l = s.last, l == "\n" || l == " " || l == "\0" { s.removeLast() }
    return s
}

/// Errors of the TCMU service.
public enum TCMUError: Error, CustomStringConvertible {
    case device(String, String)
    case config(String)
    /// A configfs or sysfs control of the kernel could not be written.
    case kernelControl(path: String, detail: String)
    /// A device left by another process could not be taken over safely.
    case takeover(detail: String)
    public var description: String {
        switch self {
        case let .device(name, detail): return "\(name): \(detail)"
        case let .config(text): return text
        case let .kernelControl(path, detail): return "\(path): \(detail)"
        case let .takeover(detail): return "cannot take over the ring: \(detail)"
        }
    }
}
