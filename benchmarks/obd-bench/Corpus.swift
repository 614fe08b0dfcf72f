import BlockIO
import Glibc

/// A system-file corpus: the first bytes of files under /usr (libraries, binaries,
/// text), concatenated up to `size` bytes, written once to `path`.
func makeCorpus(path: String, size: Int) throws -> LocalFile {
    if access(path, R_OK) == 0, let f = try? LocalFile(path: path), f.size == UInt64(size) { return f }
    let out = try LocalFile(path: path, mode: .createTruncate)
    var written = 0
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    defer { buf.deallocate() }
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/share/doc", "/usr/lib", "/usr/share"] {
        guard let d = opendir(dir) else { continue }
        defer { closedir(d) }
        while written < size, let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix(".") { continue }
            let p = dir + "/" + name
            var st = stat()
            guard stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size > 0 else { continue }
            guard let f = try? LocalFile(path: p) else { continue }
            var off: UInt64 = 0
            while written < size && off < f.size && off < 8 << 20 {
                let n = try f.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<min(buf.count, size - written)]), at: off)
                if n == 0 { break }
                try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: UInt64(written))
                written += n
                off += UInt64(n)
            }
        }
    }
    if written < size {
        // Not enough files: repeat what we have.
        var src = 0
        while written < size {
            let n = try out.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<min(buf.count, size - written)]), at: UInt64(src))
            try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: UInt64(written))
            written += n
            src += n
        }
    }
    return try LocalFile(path: path)
}
