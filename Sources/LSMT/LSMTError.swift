/// Errors of LSMT layers and stacks. Each names the file.
public enum LSMTError: Error, CustomStringConvertible, Equatable {
    /// Bad magic or header flags: not an LSMT file of the expected kind.
    case notLSMT(name: String, detail: String)
    /// A structural problem in a header, trailer or index.
    case corrupt(name: String, detail: String)
    /// A request the layer cannot serve (misaligned, read-only, too many layers).
    case invalidRequest(name: String, detail: String)
    /// A bad argument to create/commit/merge.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .notLSMT(name, detail): return "\(name): not an LSMT layer: \(detail)"
        case let .corrupt(name, detail): return "\(name): corrupt LSMT layer: \(detail)"
        case let .invalidRequest(name, detail): return "\(name): \(detail)"
        case let .invalidArgument(text): return text
        }
    }
}
