import BlockIO
import Trace

/// Replays a trace into an image's layers as soon as the image opens: the records are
/// merged into a `ReplayPlan` (per layer, adjacent and overlapping records joined up to
/// `prefetchConfig.maxRange`, first-access order), and `prefetchConfig.concurrency`
/// threads read the ranges from the lowers' layer files, which pulls remote bytes into
/// the shared cache. Layers the trace names but the image lacks are skipped (logged).
/// `Image.close` stops it: no new range starts and every thread is joined.
public final class Prefetcher: Sendable {
    /// Where the trace came from (a path, or a blob URL for a remote acceleration layer).
    public let source: String
    public let plan: ReplayPlan
    private let replayer: TraceReplayer

    init(records: [TraceRecord], source: String, files: [any BlockFile], config: GlobalConfig.PrefetchConfig,
         log: @escaping @Sendable (String) -> Void) {
        self.source = source
        var sizes: [UInt32: UInt64] = [:]
        var byIndex: [UInt32: any BlockFile] = [:]
        for (i, f) in files.enumerated() {
            sizes[UInt32(i)] = f.size
            byIndex[UInt32(i)] = f
        }
        plan = ReplayPlan(records: records, maxRange: UInt64(config.maxRange), layerSizes: sizes)
        if !plan.unknownLayers.isEmpty {
            log("prefetch from \(source): \(plan.unknownLayerRecords) records name layers \(plan.unknownLayers.sorted()) that this image does not have (it has \(files.count) lowers); they are skipped")
        }
        if plan.clippedRecords > 0 {
            log("prefetch from \(source): \(plan.clippedRecords) records reach past the end of their layer file; cut at the end")
        }
        log("prefetch from \(source): \(records.count) records -> \(plan.ranges.count) ranges, \(plan.totalBytes) bytes, \(config.concurrency) at a time")
        replayer = TraceReplayer(plan: plan, files: byIndex, concurrency: config.concurrency, log: log)
    }

    func start() throws { try replayer.start() }

    /// Ranges done, bytes read and failures so far.
    public var progress: ReplayProgress { replayer.progress }

    /// Whether the replay has ended (all ranges read, or stopped).
    public var isFinished: Bool { replayer.isFinished }

    /// Waits up to `seconds` for the replay to end; true if it has.
    public func wait(seconds: Double) -> Bool { replayer.wait(seconds: seconds) }

    /// Stops the replay: no new range starts; returns once every prefetch thread has exited.
    public func stop() { replayer.stop() }
}
