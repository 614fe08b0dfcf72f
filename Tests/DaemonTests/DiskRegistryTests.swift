import BlockIO
@testable import Daemon
import Glibc
import LSMT
import Testing
import Threading
@testable import VhostUser

@Suite("Disk registry", .serialized)
struct DiskRegistryTests {
    @Test("read-only and writable NBD disks: reads equal the image, writes land in the upper, remove flushes")
    func nbdDisks() throws {
        let f = try DaemonFixture()
        try f.registry.add(f.spec("ro"))
        try f.registry.add(f.spec("rw", writable: true))
        let ro = try f.nbd("ro")
        #expect(ro.size == DaemonFixture.size)
        let (e, bytes) = try ro.read(8192, 65536)
        #expect(e == 0 && bytes == Array(f.content[8192..<(8192 + 65536)]))
        #expect(try ro.write(0, [UInt8](repeating: 1, count: 512)) != 0)
        let rw = try f.nbd("rw")
        let data = [UInt8](repeating: 0xab, count: 4096)
        #expect(try rw.write(4096, data) == 0)
        #expect(try rw.read(0, 12288).1 == Array(f.content[0..<4096]) + data + Array(f.content[8192..<12288]))
        #expect(try f.registry.stats(id: "rw").writes == 1)
        try f.registry.remove(id: "rw")
        try f.registry.remove(id: "ro")
        #expect(access(f.dir.file("rw.sock"), F_OK) != 0)
        #expect(f.registry.count == 0 && f.registry.lowers.users.isEmpty)
        // The upper kept the write: reopened over the same image it reads back.
        var again = f.spec("rw", writable: true)
        again.reopen = true
        try f.registry.add(again)
        #expect(try f.nbd("rw").read(4096, 4096).1 == data)
    }

    @Test("vhost-user-blk disk: a front-end's first read returns the image's bytes")
    func vhostFirstRead() throws {
        let f = try DaemonFixture()
        try f.registry.add(f.spec("vu", writable: true, nbd: false, queues: 2))
        let client = try TestFrontEnd(path: f.dir.file("vu.sock"))
        let ram = GuestRAM()
        _ = try client.handshake(ram: ram)
        let q = DriverQueue(index: 0, size: 16, ram: ram)
        try client.startQueue(q)
        let req = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: 16, dataLengths: [4096], deviceWrites: true)
        q.publish(q.addChain(req.chain))
        q.doKick()
        #expect(q.waitUsed(1) != nil)
        #expect(req.statusByte(ram) == VirtioBlk.statusOK)
        #expect(req.dataBytes(ram) == Array(f.content[8192..<(8192 + 4096)]))
        client.close()
        try f.registry.remove(id: "vu")
        #expect(throws: DaemonError.noSuchDisk("vu")) { try f.registry.stats(id: "vu") }
    }

    @Test("two writable disks over one image see only their own writes; the lowers are opened once")
    func isolationAndOpenOnce() throws {
        let f = try DaemonFixture()
        // A second config in another folder naming the same layer file shares the lowers too.
        mkdir(f.dir.file("other"), 0o755)
        try f.writeText("other/image.json", #"{"lowers":[{"file":"../lower"}]}"#)
        try parallelForEach(count: 8, threads: 8) { i in
            try f.registry.add(f.spec("w\(i)", writable: true, config: i == 7 ? "other/image.json" : "image.json"))
        }
        #expect(f.registry.lowers.opens == 1)
        #expect(f.registry.lowers.users.values.first == 8)
        #expect(descriptors(openOn: f.dir.file("lower")) == 1)
        for i in 0..<8 {
            #expect(try f.nbd("w\(i)").write(65536, [UInt8](repeating: UInt8(i + 1), count: 4096)) == 0)
        }
        for i in 0..<8 {
            let got = try f.nbd("w\(i)").read(65536 - 512, 4096 + 1024).1
            #expect(got == Array(f.content[(65536 - 512)..<65536]) + [UInt8](repeating: UInt8(i + 1), count: 4096)
                    + Array(f.content[(65536 + 4096)..<(65536 + 4096 + 512)]))
        }
        #expect(try f.registry.stats(id: "w3").lowersSharedBy == 8)
        for i in 0..<8 { try f.registry.remove(id: "w\(i)") }
        // The last disk let go: the lowers are closed, a new add opens them again.
        #expect(f.registry.lowers.users.isEmpty)
        #expect(eventually { descriptors(openOn: f.dir.file("lower")) == 0 })
        try f.registry.add(f.spec("again"))
        #expect(f.registry.lowers.opens == 2)
    }

    @Test("restart: a new registry restores the state file's disks, uppers reopened with their writes")
    func restore() throws {
        let f = try DaemonFixture()
        try f.registry.add(f.spec("a"))
        try f.registry.add(f.spec("b", writable: true, nbd: false))
        try f.registry.add(f.spec("c", writable: true))
        #expect(try f.nbd("c").write(0, [UInt8](repeating: 7, count: 512)) == 0)
        try f.registry.remove(id: "a")
        #expect(try StateFile.read(path: f.dir.file("state.json")).map(\.id) == ["b", "c"])
        f.registry.shutdown()
        // Shutdown leaves the state file: the next start serves the same disks.
        f.registry = f.makeRegistry()
        let failures = try f.registry.restore()
        #expect(failures.isEmpty)
        #expect(f.registry.list().map(\.id) == ["b", "c"])
        #expect(try f.nbd("c").read(0, 1024).1 == [UInt8](repeating: 7, count: 512) + Array(f.content[512..<1024]))
        // An entry that no longer opens is reported and left out of the rewritten file.
        f.registry.shutdown()
        unlink(f.dir.file("upper-c/writable_data"))
        f.registry = f.makeRegistry()
        let failed = try f.registry.restore()
        #expect(failed.map(\.id) == ["c"] && failed.first?.error.code == "upper_failed")
        #expect(try StateFile.read(path: f.dir.file("state.json")).map(\.id) == ["b"])
    }

    @Test("200 adds and removes with first reads: descriptors, threads and memory stay bounded")
    func addRemoveLoop() throws {
        let f = try DaemonFixture(state: true)
        var baseline: (fds: Int, threads: Int, rss: Int) = (0, 0, 0)
        var peak: (fds: Int, threads: Int, rss: Int) = (0, 0, 0)
        for i in 0..<200 {
            let vhost = i % 4 == 3
            let id = "loop\(i)"
            try f.registry.add(f.spec(id, writable: i % 2 == 0, nbd: !vhost))
            if vhost {
                let client = try TestFrontEnd(path: f.dir.file(id + ".sock"))
                let ram = GuestRAM(size: 1 << 20)
                _ = try client.handshake(ram: ram)
                let q = DriverQueue(index: 0, size: 8, ram: ram)
                try client.startQueue(q)
                let req = BlkRequest(ram: ram, type: VirtioBlk.typeIn, sector: UInt64(i), dataLengths: [512], deviceWrites: true)
                q.publish(q.addChain(req.chain))
                q.doKick()
                #expect(q.waitUsed(1) != nil)
                #expect(req.dataBytes(ram) == Array(f.content[(i * 512)..<(i * 512 + 512)]))
                client.close()
            } else {
                let c = try f.nbd(id)
                #expect(try c.read(UInt64(i) * 512, 512).1 == Array(f.content[(i * 512)..<(i * 512 + 512)]))
            }
            try f.registry.remove(id: id)
            if i % 2 == 0 { _ = TemporaryDirectoryCleanup.remove(f.dir.file("upper-" + id)) }
            let now = (openFDs(), threadCount(), residentKiB())
            if i == 19 { baseline = now }
            if i >= 19 { peak = (max(peak.fds, now.0), max(peak.threads, now.1), max(peak.rss, now.2)) }
        }
        print("daemon add/remove loop: fds \(baseline.fds) -> peak \(peak.fds), threads \(baseline.threads) -> peak \(peak.threads), RSS \(baseline.rss) KiB -> peak \(peak.rss) KiB")
        #expect(peak.fds - baseline.fds <= 8)
        #expect(peak.threads - baseline.threads <= 8)
        #expect(peak.rss - baseline.rss <= 64 * 1024)
        #expect(f.registry.count == 0 && f.registry.lowers.users.isEmpty)
    }
}

/// Removes a writable loop disk's upper folder (its one data file).
enum TemporaryDirectoryCleanup {
    static func remove(_ dir: String) -> Bool {
        unlink(dir + "/" + DiskSpec.upperDataName)
        return rmdir(dir) == 0
    }
}
