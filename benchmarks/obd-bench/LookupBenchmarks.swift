import LSMT

/// Merged-index lookups per second: obd's bucket table vs binary search over the same keys.
enum LookupBenchmarks {
    static func run(queries: Int) -> String {
        var table = Table("Merged-index lookups (M lookups/s; random LBAs over a 64 GiB disk)",
                          ["segments", "obd SegmentLookup", "binary search", "speed-up", "goal"])
        for n in [1_000, 10_000, 100_000, 1_000_000] {
            var rng = FastRandom(UInt64(n))
            let vsizeSectors: UInt64 = 64 << 21
            var keys = Set<UInt64>()
            while keys.count < n { keys.insert(rng.next() % vsizeSectors) }
            let lookup = SegmentLookup(keys: keys.sorted())
            let probes = (0..<queries).map { _ in rng.next() % vsizeSectors }
            var sink = 0
            let tFast = best(5) { for x in probes { sink &+= lookup.lastIndex(notAfter: x) } }
            let tBin = best(5) { for x in probes { sink &+= lookup.binarySearchLastIndex(notAfter: x) } }
            if sink == 42 { print("") }
            let q = Double(queries)
            table.add(["\(n)", fmt(q / tFast / 1e6, 1), fmt(q / tBin / 1e6, 1), fmt(tBin / tFast) + "x", ">= 3x"])
        }
        return table.render()
    }
}
