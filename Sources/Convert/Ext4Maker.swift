import BlockIO
import Ext4
import Glibc

/// Makes an empty ext4 on a block file, without root: Debian's `mke2fs` formats a
/// sparse scratch file with overlaybd's userspace profile (4 KiB blocks, 256-byte
/// inodes, one inode per 16 KiB, no journal, flex_bg, sparse_super2, extents, 64bit,
/// no metadata_csum) and a configuration of our own (never the host's
/// /etc/mke2fs.conf), then the blocks that hold data are copied into the target.
/// Every byte is fixed by the inputs: UUID and directory hash seed are given, and the
/// clock is pinned with E2FSPROGS_FAKE_TIME (never 0: libext2fs then takes the real
/// clock, for the bad-blocks and resize inodes and the backup superblocks too).
public enum Ext4Maker {
    public static let features = "ext_attr,resize_inode,dir_index,sparse_super2,filetype,extent,64bit,flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize"

    static let config = """
        [defaults]
        \tbase_features = \(features)
        \tenable_periodic_fsck = 0
        \tblocksize = 4096
        \tinode_size = 256
        \tinode_ratio = 16384
        \treserved_ratio = 5.0
        \tlazy_itable_init = false
        \tlazy_journal_init = false
        [fs_types]
        \text4 = {
        \t\tfeatures = \(features)
        \t}

        """

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Formats `target` (its whole size) with file system `uuid` (also the hash seed),
    /// dated `epoch` (at least 1, as `Ext4Filesystem` dates). `scratch` is a folder for
    /// the temporary image.
    public static func make(on target: any BlockFile, uuid: String, epoch: Int64, scratch: String) throws {
        // An image without `created` has epoch 0, and E2FSPROGS_FAKE_TIME=0 means "use
        // the clock": what stampCreation cannot reach later (inodes 1 and 7, the backup
        // superblocks, which libext2fs leaves alone once opened) would carry the clock.
        let epoch = max(epoch, 1)
        let image = scratch + "/mkfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
        let conf = image + ".conf"
        defer { unlink(image); unlink(conf) }
        try writeText(conf, config)
        let f = try LocalFile(path: image, mode: .createExclusive)
        try f.truncate(to: target.size)
        let blocks = target.size / 4096
        let argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-i", "16384", "-m", "5",
                    "-O", "none," + features, "-E", "nodiscard,hash_seed=\(uuid),root_owner=0:0",
                    "-U", uuid, "-L", "", image, "\(blocks)"]
        let env = ["MKE2FS_CONFIG=\(conf)", "E2FSPROGS_FAKE_TIME=\(epoch)", "PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C"]
        let (status, output) = runProcess(argv, environment: env)
        guard status == 0 else { throw Failure(description: "mke2fs failed (exit \(status)): \(output)") }
        // Copy what mke2fs wrote; all-zero blocks stay holes (they read as zeros anyway).
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        for run in try f.dataRuns(from: 0) {
            var off = run.lowerBound
            while off < run.upperBound {
                let n = Int(min(UInt64(buf.count), run.upperBound - off))
                let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
                try f.readExactly(into: part, at: off)
                var b = 0
                while b < n {
                    let blk = UnsafeRawBufferPointer(rebasing: part[b..<min(n, b + 4096)])
                    if !blk.allSatisfy({ $0 == 0 }) {
                        var e = b + blk.count
                        while e < n && !UnsafeRawBufferPointer(rebasing: part[e..<min(n, e + 4096)]).allSatisfy({ $0 == 0 }) { e += 4096 }
                        try target.write(UnsafeRawBufferPointer(rebasing: part[b..<min(n, e)]), at: off + UInt64(b))
                        b = e
                    } else {
                        b += 4096
                    }
                }
                off += UInt64(n)
            }
        }
        // mke2fs 1.47 dates the root and lost+found from the clock: set them to `epoch`.
        let fs = try Ext4Filesystem(file: target, epoch: epoch)
        try fs.stampCreation()
        try fs.close()
    }

    static func writeText(_ path: String, _ text: String) throws {
        let f = try LocalFile(path: path, mode: .createTruncate)
        try f.writeBytes(Array(text.utf8), at: 0)
    }

    /// Runs a program (found on PATH of `environment`), returning its status and output.
    static func runProcess(_ argv: [String], environment: [String]) -> (Int32, String) {
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        var pid: pid_t = 0
        let cargs = argv.map { strdup($0) } + [nil]
        let cenv = environment.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) }; cenv.forEach { free($0) } }
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, cargs, cenv)
        posix_spawn_file_actions_destroy(&actions)
        close(fds[1])
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        close(fds[0])
        guard rc == 0 else { return (127, "cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, String(decoding: out, as: UTF8.self))
    }
}
