import BlockIO
import Ext4
import Trace

/// What a priority list asks to prefetch, found in the ext4 file system of the merged
/// lower disk (as overlaybd mounts the merged read-only lowers): each listed file's data
/// extents (a line ending in `/` or `*`: every regular file under that directory), cut at
/// the file size rounded up to 512 and sliced into reads of at most 1 MiB, as overlaybd
/// turns its fiemap results into records. The records are in list order and name layer 0,
/// which here means the merged lower disk, not a layer file.
///
/// Paths that do not exist are logged and skipped, as are entries that name something
/// else than the line says (a directory without the trailing `/`, a device, ...). Symbolic
/// links in a listed path are followed inside the file system (`/bin/sh` prefetches what
/// it points to); links met during a walk are not. A file listed twice (or a hard link of
/// one already listed) is read once.
public struct PriorityListPlan: Sendable, Equatable {
    /// overlaybd slices each extent into reads of at most this many bytes.
    public static let sliceSize: UInt64 = 1 << 20
    /// Most files one list may expand to (walks stop there, logged).
    public static let maxFiles = 1 << 20
    /// Most records one list may expand to (4 TiB of 1 MiB reads; the rest is dropped, logged).
    public static let maxRecords = 1 << 22

    /// Reads of the merged lower disk (layer index 0), in list order, each at most `sliceSize`.
    public let records: [TraceRecord]
    /// Regular files whose data is prefetched.
    public let files: Int
    /// Listed paths that do not exist (skipped).
    public let missing: [String]
    /// Entries skipped for another reason, with the reason.
    public let skipped: [String]
    /// Whether a limit (`maxFiles`, `maxRecords`) cut the list short.
    public let truncated: Bool

    /// Bytes the records read.
    public var bytes: UInt64 { records.reduce(0) { $0 + $1.count } }

    /// Resolves `list` over the ext4 file system in `disk` (the merged lowers).
    /// - Parameters:
    ///   - source: names the list in log lines.
    ///   - shouldStop: polled between entries; true ends the resolution early (image closing).
    ///   - log: receives one line per missing or skipped entry (the first 20 of each) and a summary.
    /// - Throws: `Ext4Error` when the disk holds no ext4 file system that libext2fs opens.
    ///   A bad inode or directory met while resolving an entry only skips that entry.
    public static func resolve(_ list: PriorityList, disk: any BlockFile, source: String,
                               shouldStop: () -> Bool = { false },
                               log: (String) -> Void = { _ in }) throws(Ext4Error) -> PriorityListPlan {
        let fs = try Ext4Filesystem(file: disk, writable: false)
        defer { try? fs.close() }
        var records: [TraceRecord] = []
        var seen = Set<UInt32>()
        var files = 0
        var missing: [String] = [], skipped: [String] = []
        var truncated = false
        func skip(_ path: String, _ why: String) {
            skipped.append("\(path): \(why)")
            if skipped.count <= 20 { log("priority list \(source): \(path): \(why); skipped") }
        }
        /// Adds one file; false once a limit is reached.
        func add(_ ino: UInt32, path: String) throws(Ext4Error) -> Bool {
            guard seen.insert(ino).inserted else { return true }
            guard files < maxFiles else { truncated = true; return false }
            files += 1
            for e in try fs.extents(of: ino, path: path) {
                var at: UInt64 = 0
                while at < e.length {
                    guard records.count < maxRecords else { truncated = true; return false }
                    let n = min(sliceSize, e.length - at)
                    records.append(TraceRecord(layerIndex: 0, count: n, offset: Int64(e.diskOffset + at)))
                    at += n
                }
            }
            return true
        }
        entries: for entry in list.entries {
            if shouldStop() { break }
            let path = entry.path
            guard let ino = fs.resolveFollowing(entry.components) else {
                missing.append(path)
                if missing.count <= 20 { log("priority list \(source): \(path) does not exist; skipped") }
                continue
            }
            do {
                if try fs.isRegularFile(ino, path: path) {
                    if try !add(ino, path: path) { break entries }
                } else if try fs.isDirectory(ino, path: path) {
                    guard entry.walk else {
                        skip(path, "is a directory (end the line with / to prefetch its files)")
                        continue
                    }
                    let (found, cut) = try fs.regularFiles(under: ino, path: path, limit: maxFiles - files)
                    for f in found {
                        do {
                            if try !add(f.inode, path: f.path) { break entries }
                        } catch {
                            skip(f.path, "\(error)")
                        }
                    }
                    if cut { truncated = true; break entries }
                } else {
                    skip(path, "is neither a regular file nor a directory")
                }
            } catch {
                skip(path, "\(error)")
            }
        }
        if missing.count > 20 { log("priority list \(source): \(missing.count) listed paths do not exist in all (first 20 logged)") }
        if skipped.count > 20 { log("priority list \(source): \(skipped.count) entries skipped in all (first 20 logged)") }
        if truncated {
            log("priority list \(source): stopped at \(files) files / \(records.count) reads (limits \(maxFiles) files, \(maxRecords) reads)")
        }
        if !list.skipped.isEmpty {
            let shown = list.skipped.prefix(5).map { "line \($0.line): \($0.reason)" }.joined(separator: "; ")
            log("priority list \(source): \(list.skipped.count) lines are not usable paths and are skipped (\(shown))")
        }
        return PriorityListPlan(records: records, files: files, missing: missing, skipped: skipped, truncated: truncated)
    }
}
