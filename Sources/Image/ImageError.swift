/// Errors of image assembly: configuration problems and layers that cannot be opened.
public enum ImageError: Error, CustomStringConvertible, Equatable {
    /// A configuration file is malformed or asks for something obd cannot do.
    case config(path: String, detail: String)
    /// A layer could not be opened.
    case layer(path: String, detail: String)

    public var description: String {
        switch self {
        case let .config(path, detail): return "\(path): \(detail)"
        case let .layer(path, detail): return "\(path): \(detail)"
        }
    }
}
