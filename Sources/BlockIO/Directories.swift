import Glibc

/// `mkdir -p`: creates `path` and its missing parents (errors show up at the first use).
public func makeDirectories(_ path: String, mode: mode_t = 0o755) {
    var p = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        p += "/" + part
        mkdir(p, mode)
    }
}
