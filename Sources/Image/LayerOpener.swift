import BlockIO
import Glibc
import LSMT
import ZFile

/// Opens one layer blob as a read-only LSMT layer, peeling the optional wrappers:
/// `[tar wrapper] ⊃ [ZFile] ⊃ LSMT read-only file`.
public enum LayerOpener {
    /// What a layer blob turned out to be.
    public struct Layout: Sendable, Equatable, CustomStringConvertible {
        public var tarWrapped = false
        public var zfile = false
        public var description: String {
            (tarWrapped ? "tar > " : "") + (zfile ? "zfile > " : "") + "lsmt"
        }
    }

    /// Peels the tar wrapper and ZFile from `file`, returning the inner file.
    public static func unwrap(_ file: any BlockFile) throws -> (any BlockFile, Layout) {
        var layout = Layout()
        var inner: any BlockFile = file
        if let payload = try TarWrapper.unwrap(inner) {
            inner = payload
            layout.tarWrapped = true
        }
        if try ZFileReader.isZFile(inner) {
            inner = try ZFileReader(source: inner)
            layout.zfile = true
        }
        return (inner, layout)
    }

    /// Opens the layer file at `path` with the I/O engine `ioEngine` selects
    /// (0: pread, with small reads served from a memory mapping; 1: libaio + O_DIRECT).
    /// `decorate` wraps the inner (decompressed) file before LSMT reads it.
    public static func open(path: String, ioEngine: Int = 0,
                            decorate: (any BlockFile) -> any BlockFile = { $0 }) throws -> ReadOnlyLayer {
        if ioEngine == 1 { return try open(file: AIOFile(path: path), decorate: decorate) }
        return try open(file: LocalFile(path: path), decorate: decorate)
    }

    /// Opens a layer from any file; `decorate` wraps the inner (decompressed) file, the
    /// view above ZFile and below LSMT (trace recording sits there).
    public static func open(file: any BlockFile, decorate: (any BlockFile) -> any BlockFile = { $0 }) throws -> ReadOnlyLayer {
        let (inner, _) = try unwrap(file)
        return try ReadOnlyLayer(file: decorate(inner))
    }
}

/// Existence checks with `access(2)`.
enum LocalFileProbe {
    static func exists(_ path: String) throws -> Bool {
        access(path, F_OK) == 0
    }
}
