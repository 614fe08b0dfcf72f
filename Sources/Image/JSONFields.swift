import FoundationEssentials

/// Decodes a JSON configuration and turns decoding errors into one clear line that
/// names the file and the field.
enum JSONFields {
    static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as DecodingError {
            throw ImageError.config(path: path, detail: describe(error))
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [any CodingKey]) -> String {
            var out = ""
            for key in path {
                if let i = key.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + key.stringValue }
            }
            return out.isEmpty ? "top level" : "field '\(out)'"
        }
        switch error {
        case let .typeMismatch(type, ctx):
            return "\(field(ctx.codingPath)): expected \(typeName(type))"
        case let .valueNotFound(type, ctx):
            return "\(field(ctx.codingPath)): expected \(typeName(type)), found null"
        case let .keyNotFound(key, ctx):
            return "\(field(ctx.codingPath + [key])): missing"
        case let .dataCorrupted(ctx):
            if ctx.codingPath.isEmpty { return "not valid JSON" }
            return "\(field(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default:
            return "cannot decode"
        }
    }

    static func typeName(_ t: Any.Type) -> String {
        switch t {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Int.Type, is UInt64.Type, is Int64.Type, is UInt32.Type, is Int32.Type: return "an integer"
        case is Double.Type: return "a number"
        default:
            let n = String(describing: t)
            if n.hasPrefix("Array") { return "an array" }
            return "an object"
        }
    }
}

extension KeyedDecodingContainer {
    /// The value of `key`, or `fallback` when the key is absent (a wrong type still fails).
    func value<T: Decodable>(_ key: Key, default fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback
    }
}
