import FoundationEssentials
import Glibc
import Image
import Testing
import TestSupport

@Suite("Image and global configs")
struct ConfigTests {
    func parse(_ json: String, path: String = "/cfg/config.v1.json") throws -> ImageConfig {
        try ImageConfig.parse(Data(json.utf8), path: path)
    }

    func message(_ json: String) -> String {
        do { _ = try parse(json); return "" } catch { return "\(error)" }
    }

    @Test("fields, defaults and relative paths")
    func fields() throws {
        let c = try parse(#"{"lowers":[{"file":"a.commit"},{"dir":"/abs/layer"}],"upper":{"data":"d","index":"i"},"resultFile":"r","unknownKey":1}"#)
        #expect(c.lowers.count == 2)
        #expect(c.resolve(c.lowers[0].file) == "/cfg/a.commit")
        #expect(c.resolve(c.lowers[1].dir) == "/abs/layer")
        #expect(c.hasUpper && c.resolve(c.upper.index) == "/cfg/i")
        #expect(c.resolve(c.resultFile) == "/cfg/r")
        #expect(try parse("{}").lowers.isEmpty)
    }

    @Test("wrong types and impossible values give one clear line naming the field")
    func wrongTypes() {
        #expect(message(#"{"lowers":[{"file":3}]}"#) == "/cfg/config.v1.json: field 'lowers[0].file': expected a string")
        #expect(message(#"{"lowers":{}}"#).contains("field 'lowers': expected an array"))
        #expect(message(#"{"resultFile":true}"#).contains("field 'resultFile'"))
        #expect(message("not json").contains("not valid JSON"))
        #expect(message(#"{"upper":{"data":"d"}}"#).contains("needs both 'data' and 'index'"))
        #expect(message(#"{"lowers":[{}]}"#).contains("needs 'file', 'dir' or 'digest'"))
    }

    @Test("fields of later capabilities are rejected with a clear message")
    func rejected() {
        #expect(message(#"{"accelerationLayer":true}"#).contains("'accelerationLayer' needs at least one lower"))
        #expect(message(#"{"lowers":[{"file":"a"}],"accelerationLayer":true,"recordTracePath":"/x"}"#)
                == "/cfg/config.v1.json: 'recordTracePath' cannot be used with 'accelerationLayer' (a trace is not recorded over an acceleration layer)")
        #expect(message(#"{"lowers":[{"file":"a"}],"accelerationLayer":true}"#) == "")
        #expect(message(#"{"recordTracePath":"/x"}"#) == "")
        #expect(message(#"{"recordTracePath":7}"#).contains("field 'recordTracePath': expected a string"))
        #expect(message(#"{"download":{"enable":true,"tryCnt":0}}"#).contains("tryCnt >= 1"))
        #expect(message(#"{"download":{"enable":true}}"#) == "")
        #expect(message(#"{"lowers":[{"file":"x","gzipIndex":"g"}]}"#).contains("needs a TurboOCI target"))
        #expect(message(#"{"download":{"enable":false}}"#) == "")
    }

    @Test("remote lowers: malformed digests and repoBlobUrls are refused clearly")
    func remoteLower() throws {
        #expect(message(#"{"repoBlobUrl":"https://r/v2/x/blobs","lowers":[{"digest":"sha256:00"}]}"#).contains("is not sha256:<64 lowercase hex>"))
        let d = "sha256:" + String(repeating: "ab", count: 32)
        for (url, text) in [("", "no 'repoBlobUrl'"), ("ftp://r/v2/x/blobs", "does not start with"), ("https://r/x/blobs", "is not of the form")] {
            let c = try parse(#"{"repoBlobUrl":"\#(url)","lowers":[{"digest":"\#(d)"}]}"#)
            do { _ = try Image(config: c); Issue.record("opened") } catch { #expect("\(error)".contains(text), "\(error)") }
        }
        // Unreachable registry (nothing listens on port 9 of loopback): a clean connection error.
        var g = GlobalConfig()
        g.cacheConfig.cacheType = "file"
        g.cacheConfig.cacheDir = "/tmp/obd-config-test-cache-\(getpid())"
        g.registryConfig.timeoutSeconds = 1
        let c = try parse(#"{"repoBlobUrl":"http://127.0.0.1:9/v2/x/blobs","lowers":[{"digest":"\#(d)","size":4096}]}"#)
        do { _ = try Image(config: c, global: g); Issue.record("opened") } catch {
            #expect("\(error)".contains("lowers[0]") && ("\(error)".contains("Connection failed") || "\(error)".contains("timedout")), "\(error)")
        }
        _ = run(["/bin/rm", "-rf", g.cacheConfig.cacheDir])
    }

    @Test("global config: defaults, overrides, unknown keys ignored, wrong types rejected")
    func global() throws {
        let d = try GlobalConfig.parse(Data("{}".utf8), path: "g.json")
        #expect(d.cacheConfig.refillSize == 262_144 && d.ioEngine == 0 && d.cacheConfig.cacheSizeGB == 4)
        let g = try GlobalConfig.parse(Data(#"{"cacheConfig":{"cacheDir":"/c","cacheSizeGB":1},"weird":[1,2],"logConfig":{"logLevel":0}}"#.utf8), path: "g.json")
        #expect(g.cacheConfig.cacheDir == "/c" && g.cacheConfig.cacheSizeGB == 1 && g.logConfig.logLevel == 0)
        #expect(throws: ImageError.self) { try GlobalConfig.parse(Data(#"{"ioEngine":"0"}"#.utf8), path: "g.json") }
        #expect(throws: ImageError.self) { try GlobalConfig.parse(Data(#"{"ioEngine":7}"#.utf8), path: "g.json") }
        #expect(throws: ImageError.self) { try GlobalConfig.parse(Data(#"{"cacheConfig":{"cacheSizeGB":"big"}}"#.utf8), path: "g.json") }
    }

    @Test("gzipCacheConfig (TurboOCI): overlaybd's keys and defaults; bad sizes, and the registry cache's folder, refused when enabled")
    func gzipCacheConfig() throws {
        func globalMessage(_ json: String) -> String {
            do { _ = try GlobalConfig.parse(Data(json.utf8), path: "g.json"); return "" } catch { return "\(error)" }
        }
        let d = try GlobalConfig.parse(Data("{}".utf8), path: "g.json")
        #expect(!d.gzipCacheConfig.enable && d.gzipCacheConfig.cacheDir == "/opt/overlaybd/gzip_cache")
        #expect(d.gzipCacheConfig.cacheSizeGB == 4 && d.gzipCacheConfig.refillSize == 1 << 20)
        let g = try GlobalConfig.parse(Data(#"{"gzipCacheConfig":{"enable":true,"cacheDir":"/g","cacheSizeGB":2,"refillSize":65536}}"#.utf8), path: "g.json")
        #expect(g.gzipCacheConfig.enable && g.gzipCacheConfig.cacheDir == "/g" && g.gzipCacheConfig.cacheSizeGB == 2 && g.gzipCacheConfig.refillSize == 65536)
        #expect(globalMessage(#"{"gzipCacheConfig":{"enable":"yes"}}"#).contains("field 'gzipCacheConfig.enable'"))
        #expect(globalMessage(#"{"gzipCacheConfig":{"enable":true,"refillSize":1000}}"#).contains("refillSize a power of two"))
        #expect(globalMessage(#"{"gzipCacheConfig":{"enable":true,"cacheSizeGB":0}}"#).contains("cacheSizeGB must be >= 1"))
        #expect(globalMessage(#"{"cacheConfig":{"cacheType":"file","cacheDir":"/c"},"gzipCacheConfig":{"enable":true,"cacheDir":"/c/"}}"#).contains("also the registry cache folder"))
        #expect(globalMessage(#"{"gzipCacheConfig":{"enable":false,"refillSize":1000}}"#) == "")
    }

    @Test("prefetchConfig: overlaybd's concurrency (default 16) and obd's maxRange; wrong types and values are refused")
    func prefetchConfig() throws {
        func globalMessage(_ json: String) -> String {
            do { _ = try GlobalConfig.parse(Data(json.utf8), path: "g.json"); return "" } catch { return "\(error)" }
        }
        let d = try GlobalConfig.parse(Data("{}".utf8), path: "g.json")
        #expect(d.prefetchConfig.concurrency == 16 && d.prefetchConfig.maxRange == 4 << 20)
        let g = try GlobalConfig.parse(Data(#"{"prefetchConfig":{"concurrency":4,"maxRange":1048576,"other":1}}"#.utf8), path: "g.json")
        #expect(g.prefetchConfig.concurrency == 4 && g.prefetchConfig.maxRange == 1 << 20)
        #expect(globalMessage(#"{"prefetchConfig":{"concurrency":"16"}}"#) == "g.json: field 'prefetchConfig.concurrency': expected an integer")
        #expect(globalMessage(#"{"prefetchConfig":[]}"#).contains("field 'prefetchConfig'"))
        #expect(globalMessage(#"{"prefetchConfig":{"concurrency":0}}"#) == "g.json: field 'prefetchConfig.concurrency': 0 is not between 1 and 256")
        #expect(globalMessage(#"{"prefetchConfig":{"concurrency":1000}}"#).contains("1000 is not between 1 and 256"))
        #expect(globalMessage(#"{"prefetchConfig":{"maxRange":5000}}"#) == "g.json: field 'prefetchConfig.maxRange': 5000 is not a multiple of 4096 between 4096 and 67108864")
        #expect(globalMessage(#"{"prefetchConfig":{"maxRange":134217728}}"#).contains("is not a multiple of 4096 between"))
    }

    @Test("the reference service.json parses", .enabled(if: ReferenceFiles.shouldRun))
    func referenceService() throws {
        let g = try GlobalConfig.load(from: ReferenceFiles.path("lsmt/service.json"))
        #expect(g.cacheConfig.cacheType == "file" && g.cacheConfig.cacheSizeGB == 1)
    }

    @Test("missing config file: clear error")
    func missing() {
        #expect(throws: ImageError.self) { try ImageConfig.load(path: "/nonexistent/config.v1.json") }
    }
}
