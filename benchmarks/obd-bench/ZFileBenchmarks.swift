import BlockIO
import Glibc
import ZFile

/// ZFile reads vs raw block decompression of the same blocks, and compression vs the
/// lz4/zstd command-line tools.
enum ZFileBenchmarks {
    static func read(corpus: LocalFile, work: String, randomReads: Int) throws -> String {
        var table = Table("ZFile read throughput (corpus \(corpus.size >> 20) MiB, 4 KiB blocks, CRC on; GB/s of uncompressed data)",
                          ["algorithm", "access", "obd ZFileReader", "raw block decompression", "ratio", "goal"])
        for alg in ZFileAlgorithm.allCases {
            let path = "\(work)/corpus.\(alg).zfile"
            try compressFile(corpus, to: path, options: ZFileOptions(algorithm: alg, threads: 2))
            let reader = try ZFileReader(source: LocalFile(path: path))
            let compressed = try LocalFile(path: path).readBytes(at: 0, count: Int(LocalFile(path: path).size))
            let n = reader.table.blockCount
            let bs = reader.blockSize
            let size = Double(reader.size)
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { out.deallocate() }

            // Sequential: obd reads 1 MiB at a time; the anchor decodes every block from memory.
            let seqObd = try best {
                var off: UInt64 = 0
                while off < reader.size { off += UInt64(try reader.read(into: out, at: off)) }
            }
            let seqRaw = compressed.withUnsafeBytes { c in
                best {
                    for i in 0..<n {
                        let lo = Int(reader.table.offset(i)), hi = Int(reader.table.offset(i + 1)) - 4
                        let len = min(bs, Int(reader.size) - i * bs)
                        _ = BlockCodec.decompress(alg, UnsafeRawBufferPointer(rebasing: c[lo..<hi]),
                                                  into: UnsafeMutableRawBufferPointer(rebasing: out[0..<len]))
                    }
                }
            }
            table.add([alg.description, "sequential", gbps(size, seqObd), gbps(size, seqRaw), fmt(seqRaw / seqObd), ">= 0.85"])

            // Random 4 KiB reads at block-aligned offsets.
            var rng = FastRandom(7)
            let picks = (0..<randomReads).map { _ in Int(rng.next() % UInt64(n - 1)) }
            let one = UnsafeMutableRawBufferPointer(rebasing: out[0..<bs])
            let rndObd = try best {
                for b in picks { _ = try reader.read(into: one, at: UInt64(b * bs)) }
            }
            let rndRaw = compressed.withUnsafeBytes { c in
                best {
                    for b in picks {
                        let lo = Int(reader.table.offset(b)), hi = Int(reader.table.offset(b + 1)) - 4
                        _ = BlockCodec.decompress(alg, UnsafeRawBufferPointer(rebasing: c[lo..<hi]), into: one)
                    }
                }
            }
            let bytes = Double(randomReads * bs)
            table.add([alg.description, "random 4 KiB", gbps(bytes, rndObd), gbps(bytes, rndRaw), fmt(rndRaw / rndObd), ">= 0.70"])
        }
        return table.render()
    }

    static func compressFile(_ input: LocalFile, to path: String, options: ZFileOptions) throws {
        let out = try LocalFile(path: path, mode: .createTruncate)
        let w = try ZFileWriter(output: out, options: options)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < input.size {
            let n = try input.read(into: buf, at: off)
            try w.append(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            off += UInt64(n)
        }
        try w.finish()
    }

    static func compress(corpus: LocalFile, work: String) throws -> String {
        var table = Table("ZFile compression throughput (corpus \(corpus.size >> 20) MiB; MB/s of input)",
                          ["algorithm", "threads", "obd zfile (4 KiB blocks, CRC)", "CLI tool", "CLI MB/s", "obd / CLI"])
        let size = Double(corpus.size)
        for alg in ZFileAlgorithm.allCases {
            for threads in [1, 2] {
                let t = try best(2) { try compressFile(corpus, to: "\(work)/c.zfile", options: ZFileOptions(algorithm: alg, threads: threads)) }
                let cli = alg == .lz4 ? ["/usr/bin/lz4", "-1", "-q", "-f", "-c", corpus.path]
                                      : ["/usr/bin/zstd", "-3", "-q", "-f", "-c", "-T\(threads)", corpus.path]
                let tc = best(2) { runQuiet(cli) }
                let label = alg == .lz4 ? "lz4 -1" + (threads > 1 ? " (single-threaded tool)" : "") : "zstd -3 -T\(threads)"
                table.add([alg.description, "\(threads)", fmt(size / t / 1e6, 0), label, fmt(size / tc / 1e6, 0), fmt(tc / t)])
            }
        }
        return table.render()
    }

    /// Runs a command with stdout to /dev/null.
    static func runQuiet(_ argv: [String]) {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let cargs = argv.map { s in s.withCString { strdup($0) } } + [nil]
        posix_spawn(&pid, argv[0], &actions, nil, cargs, environ)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        cargs.forEach { free($0) }
        posix_spawn_file_actions_destroy(&actions)
    }
}
