import ArgumentParser
import LSMT

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a writable layer (data file + index file), like overlaybd-create.")

    @Argument(help: "Data file to create.") var dataFile: String
    @Argument(help: "Index file to create.") var indexFile: String
    @Argument(help: "Virtual size in GiB.") var vsize: UInt64
    @Flag(name: [.short, .long], help: "Sparse data file (the disk lives in place; no index is kept).") var sparse = false
    @Option(name: [.customShort("u"), .customLong("parent-uuid")], help: "Parent layer UUID.") var parentUUID: String?
    @Option(name: .long, help: "UUID of the new layer (default: random).") var uuid: String?
    @Flag(name: [.customLong("turbo-oci"), .customLong("turboOCI"), .customLong("fastoci")],
          help: "A TurboOCI warp layer: DATA is the fsmeta file (no header, the disk in place), INDEX its index; mappings into the original layer come from obd apply --turbo-oci.") var turboOCI = false

    func run() throws {
        try runReportingErrors {
            let parent = try parentUUID.map { try parseUUID($0, flag: "--parent-uuid") } ?? .null
            let id = try uuid.map { try parseUUID($0, flag: "--uuid") } ?? .random()
            let (size, overflow) = vsize.multipliedReportingOverflow(by: 1 << 30)
            guard !overflow else { throw CLIError("vsize \(vsize) GiB is too large") }
            if turboOCI {
                _ = try WritableWarpLayer.create(indexPath: indexFile, fsmetaPath: dataFile, virtualSize: size, uuid: id, parentUUID: parent)
                return
            }
            _ = try WritableLayer.create(dataPath: dataFile, indexPath: indexFile, virtualSize: size,
                                         parentUUID: parent, uuid: id, sparse: sparse)
        }
    }
}

func parseUUID(_ text: String, flag: String) throws -> LayerUUID {
    guard let u = LayerUUID(text) else {
        throw CLIError("\(flag): '\(text)' is not a UUID (expected 8-4-4-4-12 hex digits)")
    }
    return u
}
