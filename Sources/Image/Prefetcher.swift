import BlockIO
import Synchronization
import Threading
import Trace

/// Prefetches what a trace or a priority list names as soon as the image opens, with
/// `prefetchConfig.concurrency` threads, which pulls remote bytes into the shared cache.
///
/// - A **trace** names ranges of the lowers' layer files: its records are merged into a
///   `ReplayPlan` (per layer, adjacent and overlapping records joined up to
///   `prefetchConfig.maxRange`, first-access order) and the ranges are read from the layer
///   files. Layers the trace names but the image lacks are skipped (logged).
/// - A **priority list** names files: on a thread of its own (so the image opens without
///   waiting for the ext4 metadata reads) the list is resolved in the ext4 of the merged
///   lower disk (`PriorityListPlan`), and the files' extents are read from that disk,
///   the merged lowers stack, in reads of at most 1 MiB as overlaybd does.
///
/// `Image.close` stops it: no new range starts (a priority list stops resolving) and
/// every thread is joined.
public final class Prefetcher: Sendable {
    /// What the ranges of the plan are ranges of.
    public enum Target: Sendable, Equatable {
        /// Layer files of the lowers (a record's layer index), as a trace names them.
        case layerFiles
        /// The merged lower disk (layer index 0), as a priority list resolves.
        case mergedLowers
    }

    /// Where the trace came from (a path, or a blob URL for a remote acceleration layer).
    public let source: String
    public let target: Target

    private enum Phase {
        /// A priority list is being resolved.
        case planning
        case replaying(TraceReplayer)
        /// Stopped before a plan was made (or the list could not be resolved).
        case idle
    }

    private let phase: ConditionLock<Phase>
    private let stopping = Atomic<Bool>(false)
    private let planner = Mutex<JoinHandle?>(nil)
    private let resolve: (@Sendable (Prefetcher) -> Void)?
    private let resolved = Mutex<PriorityListPlan?>(nil)

    /// A trace's replay over the lowers' layer files (`files`, bottom first).
    init(records: [TraceRecord], source: String, files: [any BlockFile], config: GlobalConfig.PrefetchConfig,
         log: @escaping @Sendable (String) -> Void) {
        self.source = source
        target = .layerFiles
        var sizes: [UInt32: UInt64] = [:]
        var byIndex: [UInt32: any BlockFile] = [:]
        for (i, f) in files.enumerated() {
            sizes[UInt32(i)] = f.size
            byIndex[UInt32(i)] = f
        }
        let plan = ReplayPlan(records: records, maxRange: UInt64(config.maxRange), layerSizes: sizes)
        if !plan.unknownLayers.isEmpty {
            log("prefetch from \(source): \(plan.unknownLayerRecords) records name layers \(plan.unknownLayers.sorted()) that this image does not have (it has \(files.count) lowers); they are skipped")
        }
        if plan.clippedRecords > 0 {
            log("prefetch from \(source): \(plan.clippedRecords) records reach past the end of their layer file; cut at the end")
        }
        log("prefetch from \(source): \(records.count) records -> \(plan.ranges.count) ranges, \(plan.totalBytes) bytes, \(config.concurrency) at a time")
        phase = ConditionLock(.replaying(TraceReplayer(plan: plan, files: byIndex, concurrency: config.concurrency, log: log)))
        resolve = nil
    }

    /// A priority list's prefetch from `disk`, the merged lowers (resolved on a thread of its own).
    init(priorityList list: PriorityList, source: String, disk: any BlockFile, config: GlobalConfig.PrefetchConfig,
         log: @escaping @Sendable (String) -> Void) {
        self.source = source
        target = .mergedLowers
        phase = ConditionLock(.planning)
        let maxRange = min(UInt64(config.maxRange), PriorityListPlan.sliceSize)
        resolve = { me in
            let t0 = monotonicSeconds()
            var replayer: TraceReplayer?
            do {
                let p = try PriorityListPlan.resolve(list, disk: disk, source: source,
                                                     shouldStop: { me.stopping.load(ordering: .relaxed) }, log: log)
                me.resolved.withLock { $0 = p }
                let plan = ReplayPlan(records: p.records, maxRange: maxRange, layerSizes: [0: disk.size])
                log("prefetch from \(source): priority list of \(list.entries.count) paths -> \(p.files) files, \(p.missing.count) missing, \(plan.ranges.count) ranges, \(plan.totalBytes) bytes of the merged lowers (resolved in \(Int((monotonicSeconds() - t0) * 1000)) ms), \(config.concurrency) at a time")
                replayer = TraceReplayer(plan: plan, files: [0: disk], concurrency: config.concurrency, log: log)
            } catch {
                log("prefetch from \(source): the priority list is not used: \(error)")
            }
            me.phase.withLock { $0 = me.stopping.load(ordering: .relaxed) ? .idle : replayer.map { .replaying($0) } ?? .idle }
            me.phase.notifyAll()
            // After stop() this only marks the replayer stopped (TraceReplayer.start after stop starts nothing).
            if let replayer, !me.stopping.load(ordering: .relaxed) {
                do { try replayer.start() } catch { log("prefetch from \(source) cannot start: \(error)") }
            }
        }
    }

    func start() throws {
        guard !stopping.load(ordering: .relaxed) else { return }
        guard let resolve else {
            if case let .replaying(r) = phase.withLock({ $0 }) { try r.start() }
            return
        }
        let handle = try NamedThread.spawn(name: "obd-prefetch-list") { [self] in
            WorkPriority.background { resolve(self) }
        }
        planner.withLock { $0 = handle }
    }

    /// The plan being replayed. For a priority list this waits until its paths are
    /// resolved (an empty plan if it was stopped first or could not be resolved).
    public var plan: ReplayPlan {
        phase.withLock(when: { if case .planning = $0 { return false }; return true }) { p in
            if case let .replaying(r) = p { return r.plan }
            return ReplayPlan(records: [])
        }
    }

    /// For a priority list, once resolved: files found, paths missing, entries skipped.
    public var priorityList: PriorityListPlan? { resolved.withLock { $0 } }

    /// Ranges done, bytes read and failures so far (zero while a priority list resolves).
    public var progress: ReplayProgress {
        if case let .replaying(r) = phase.withLock({ $0 }) { return r.progress }
        return ReplayProgress(done: 0, total: 0, bytes: 0, failures: 0)
    }

    /// Whether the prefetch has ended (all ranges read, or stopped).
    public var isFinished: Bool {
        switch phase.withLock({ $0 }) {
        case .planning: return false
        case .idle: return true
        case let .replaying(r): return r.isFinished
        }
    }

    /// Waits up to `seconds` for the prefetch to end (resolution included); true if it has.
    public func wait(seconds: Double) -> Bool {
        let deadline = monotonicSeconds() + seconds
        guard let p = phase.withLock(when: { if case .planning = $0 { return false }; return true }, deadline: deadline, { $0 }) else {
            return false
        }
        guard case let .replaying(r) = p else { return true }
        return r.wait(seconds: max(0, deadline - monotonicSeconds()))
    }

    /// Stops the prefetch: no new range starts and a priority list stops resolving;
    /// returns once every prefetch thread has exited.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        if let h = planner.withLock({ h -> JoinHandle? in defer { h = nil }; return h }), !h.isCurrentThread { h.join() }
        let p = phase.withLock { p -> Phase in
            if case .planning = p { p = .idle }
            return p
        }
        phase.notifyAll()
        if case let .replaying(r) = p { r.stop() }
    }
}
