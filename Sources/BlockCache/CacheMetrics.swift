import CoreMetrics

/// Cache metrics (swift-metrics); created on first use, after the entry point's bootstrap.
final class CacheMetrics: Sendable {
    static let shared = CacheMetrics()
    /// Refill units found in the cache.
    let hits = Counter(label: "obd_cache_hits_total")
    /// Refill runs fetched from upstream, and their bytes.
    let misses = Counter(label: "obd_cache_misses_total")
    let fillBytes = Counter(label: "obd_cache_fill_bytes_total")
    /// Foreground reads that waited for the network: each run of missing units a
    /// foreground read fetched itself or waited for (prefetch and readahead not counted).
    let foregroundWaits = Counter(label: "obd_cache_foreground_waits_total")
    /// Whole blobs evicted.
    let evictions = Counter(label: "obd_cache_evictions_total")
}
