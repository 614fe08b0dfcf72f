import BlockIO
import Glibc
import Trace

/// What an image does with traces, decided from its config when it opens.
enum TraceMode {
    case none
    /// Record into this trace path (`recordTracePath` names an empty file).
    case record(path: String)
    /// Replay these records (a binary trace at `recordTracePath` or in the acceleration layer).
    case replay(records: [TraceRecord], source: String)
    /// Prefetch the files of this priority list (a non-empty file without the trace magic).
    case priorityList(PriorityList, source: String)
}

/// overlaybd's choice by the state of the trace file: missing means nothing, empty means
/// record, a binary trace means replay, anything else is a priority list (one path per
/// line). A binary trace that fails its checks is not replayed and the image opens
/// without prefetch (logged): a trace is a hint, never the disk's bytes. A priority list
/// over 64 KiB is refused (the image does not open), as it would be by `obd trace attach`.
enum TraceSetup {
    /// The mode `recordTracePath` asks for.
    static func mode(recordTracePath: String, config: ImageConfig, log: @Sendable (String) -> Void) throws -> TraceMode {
        let path = config.resolve(recordTracePath)
        var st = stat()
        guard stat(path, &st) == 0 else {
            log("recordTracePath \(path) does not exist: no trace is recorded or replayed")
            return .none
        }
        if st.st_size == 0 { return .record(path: path) }
        let file: LocalFile
        do { file = try LocalFile(path: path, map: false) } catch {
            throw ImageError.config(path: config.path, detail: "recordTracePath: \(error)")
        }
        return try replay(file: file, source: path, config: config, field: "recordTracePath", log: log)
    }

    /// The mode of an acceleration layer's `trace` file (an empty one has nothing to replay).
    static func replay(file: any BlockFile, source: String, config: ImageConfig, field: String,
                       log: @Sendable (String) -> Void) throws -> TraceMode {
        guard file.size > 0 else {
            log("\(source): the trace is empty: nothing to prefetch")
            return .none
        }
        let isTrace: Bool
        do { isTrace = try TraceFormat.isTrace(file) } catch {
            throw ImageError.config(path: config.path, detail: "\(field): \(error)")
        }
        guard isTrace else {
            guard file.size <= UInt64(PriorityList.maxSize) else {
                throw ImageError.config(path: config.path, detail: "\(field): \(TraceError.priorityListTooLarge(path: source, size: file.size)): it is not a binary trace (no trace magic), so it would be a priority list")
            }
            do {
                let list = try PriorityList(bytes: try file.readBytes(at: 0, count: Int(file.size)), path: source)
                return .priorityList(list, source: source)
            } catch {
                throw ImageError.config(path: config.path, detail: "\(field): \(error)")
            }
        }
        do {
            return .replay(records: try TraceFormat.read(from: file), source: source)
        } catch {
            log("\(source): the trace is not replayed: \(error)")
            return .none
        }
    }
}
