import ArgumentParser

@main
struct OBD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "obd",
        abstract: "Build, inspect and read overlaybd-compatible block images (LSMT layers, ZFile compression).",
        version: "0.1.0",
        subcommands: [CreateCommand.self, CommitCommand.self, ZFileCommand.self, MergeCommand.self, PullCommand.self, ApplyCommand.self, MkfsCommand.self, ConvertCommand.self,
                      InspectCommand.self, ExportCommand.self, WriteCommand.self, ServeCommand.self, TraceCommand.self, DaemonCommand.self, DiskCommand.self]
    )
}
