import Glibc

/// Seconds on the monotonic clock (for deadlines, throttles and timings).
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `mkdir -p`: creates `path` and its missing parents (errors show up at the first use).
public func makeDirectories(_ path: String, mode: mode_t = 0o755) {
    var p = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        p += "/" + part
        mkdir(p, mode)
    }
}
