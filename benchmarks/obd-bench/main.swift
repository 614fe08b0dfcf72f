// obd-bench: measures obd and its anchors side by side and prints tables with ratios.
// Usage: obd-bench [zfile-read|zfile-compress|lookup|stack-read|lazy|cache-hit|trace|all] [--quick]
//        obd-bench turbo-read REGISTRY_PORT NAME=CONFIG... --files LIST [--reads N]
import BlockIO
import Glibc

let args = Array(CommandLine.arguments.dropFirst())
let quick = args.contains("--quick")
let which = args.first { !$0.hasPrefix("-") } ?? "all"
let work = "/tmp/obd-bench"
mkdir(work, 0o755)

func corpus() throws -> LocalFileHandle {
    try makeCorpus(path: "\(work)/corpus.bin", size: quick ? 32 << 20 : 256 << 20)
}
typealias LocalFileHandle = LocalFile

do {
    if which == "nbd-setup" {
        // obd-bench nbd-setup DIR MIB
        let rest = args.filter { !$0.hasPrefix("-") }
        guard rest.count == 3, let mib = Int(rest[2]) else { print("usage: obd-bench nbd-setup DIR MIB"); exit(2) }
        try NBDSetup.run(dir: rest[1], diskMiB: mib, corpus: corpus())
        exit(0)
    }
    if which == "turbo-read" {
        // obd-bench turbo-read REGISTRY_PORT NAME=CONFIG_TEMPLATE... --files LIST [--reads N] (benchmarks/turbo-bench.sh)
        let rest = args.filter { !$0.hasPrefix("-") && $0.contains("=") }
        let files = args.firstIndex(of: "--files").flatMap { args.indices.contains($0 + 1) ? args[$0 + 1] : nil }
        let reads = args.firstIndex(of: "--reads").flatMap { args.indices.contains($0 + 1) ? Int(args[$0 + 1]) : nil } ?? 200
        guard let port = args.dropFirst().first.flatMap({ UInt16($0) }), !rest.isEmpty, let files else {
            print("usage: obd-bench turbo-read REGISTRY_PORT NAME=CONFIG... --files LIST [--reads N]"); exit(2)
        }
        let templates = rest.map { a in (String(a.split(separator: "=", maxSplits: 1)[0]), String(a.split(separator: "=", maxSplits: 1)[1])) }
        print(try TurboBenchmarks.run(upstreamPort: port, templates: templates, files: files, work: work, reads: reads))
        exit(0)
    }
    if which == "zfile-read" || which == "all" {
        print(try ZFileBenchmarks.read(corpus: corpus(), work: work, randomReads: quick ? 50_000 : 200_000))
    }
    if which == "zfile-compress" || which == "all" {
        print(try ZFileBenchmarks.compress(corpus: corpus(), work: work))
    }
    if which == "lookup" || which == "all" {
        print(LookupBenchmarks.run(queries: quick ? 200_000 : 2_000_000))
    }
    if which == "lazy" || which == "all" {
        print(try LazyBenchmarks.run(work: work, corpus: corpus(), quick: quick))
    }
    if which == "lazy-cold" {
        print(try LazyBenchmarks.coldOnly(work: work, corpus: corpus(), quick: quick, rounds: 5))
    }
    if which == "trace" || which == "all" {
        print(try TraceBenchmarks.run(work: work, corpus: corpus(), reads: quick ? 100_000 : 400_000))
    }
    if which == "cache-hit" || which == "all" {
        print(try CacheHitBenchmarks.run(work: work, quick: quick))
    }
    if which == "stack-read" || which == "all" {
        print(try StackBenchmarks.run(work: work, diskMiB: quick ? 64 : 512, randomReads: quick ? 50_000 : 300_000))
    }
} catch {
    print("obd-bench: error: \(error)")
    exit(1)
}
