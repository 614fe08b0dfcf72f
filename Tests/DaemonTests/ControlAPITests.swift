@testable import Daemon
import FoundationEssentials
import Glibc
import Testing

@Suite("Control API", .serialized)
struct ControlAPITests {
    /// A control server over the fixture's registry.
    final class Served {
        let f: DaemonFixture
        let server: ControlServer
        var socket: String { server.socketPath }
        init() throws {
            f = try DaemonFixture()
            server = try ControlServer(socketPath: f.dir.file("control.sock"), api: ControlAPI(registry: f.registry))
        }
        deinit { server.stop() }

        func call(_ method: String, _ target: String, _ body: String? = nil) throws -> ControlClient.Reply {
            try ControlClient.request(socket: socket, method: method, target: target, body: body.map { Array($0.utf8) }, timeout: 30)
        }

        func add(_ spec: DiskSpec) throws -> ControlClient.Reply {
            let e = JSONEncoder()
            return try ControlClient.request(socket: socket, method: "POST", target: "/v1/disks", body: Array(try e.encode(spec)), timeout: 30)
        }

        /// The error code of an error reply.
        func code(_ r: ControlClient.Reply) -> String? {
            (try? JSONDecoder().decode(ControlAPI.ErrorBody.self, from: Data(r.body)))?.code
        }
    }

    @Test("add, list, stats, health and remove over HTTP on the unix socket")
    func lifecycle() throws {
        let s = try Served()
        let added = try s.add(s.f.spec("d1", writable: true))
        #expect(added.status == 201)
        let info = try JSONDecoder().decode(DiskInfo.self, from: Data(added.body))
        #expect(info.id == "d1" && info.size == DaemonFixture.size && info.mode == .writable)
        #expect(try s.f.nbd("d1").read(0, 512).1 == Array(s.f.content[0..<512]))
        let list = try JSONDecoder().decode(ControlAPI.DiskList.self, from: Data(try s.call("GET", "/v1/disks").body))
        #expect(list.disks.map(\.id) == ["d1"])
        let stats = try JSONDecoder().decode(DiskStats.self, from: Data(try s.call("GET", "/v1/disks/d1/stats").body))
        #expect(stats.reads >= 1 && stats.lowersSharedBy == 1)
        let health = try JSONDecoder().decode(ControlAPI.Health.self, from: Data(try s.call("GET", "/v1/health").body))
        #expect(health == ControlAPI.Health(status: "ok", disks: 1, lowers: 1, lowerOpens: 1))
        #expect(try s.call("GET", "/v1/disks/d1").status == 200)
        #expect(try s.call("DELETE", "/v1/disks/d1").status == 200)
        #expect(try s.call("GET", "/v1/disks/d1").status == 404)
    }

    @Test("bad requests get a clear error and code; the disk already served keeps serving")
    func badRequests() throws {
        let s = try Served()
        #expect(try s.add(s.f.spec("good")).status == 201)
        try s.f.writeText("missing-lower.json", #"{"lowers":[{"file":"no-such-layer"}]}"#)
        try s.f.writeText("broken.json", #"{"lowers": [}"#)
        mkdir(s.f.dir.file("upper-taken"), 0o755)
        var taken = s.f.spec("taken", writable: true)
        taken.upper = s.f.dir.file("upper-taken")
        var sameSocket = s.f.spec("other")
        sameSocket.frontend.socket = s.f.dir.file("good.sock")
        var sameSocketSpelled = s.f.spec("other2")
        sameSocketSpelled.frontend.socket = s.f.dir.path + "//./good.sock"
        let cases: [(ControlClient.Reply, Int, String)] = [
            (try s.add(s.f.spec("x", config: "nope.json")), 422, "config_not_found"),
            (try s.add(s.f.spec("x", config: "missing-lower.json")), 422, "image_open_failed"),
            (try s.add(s.f.spec("x", config: "broken.json")), 422, "image_open_failed"),
            (try s.add(taken), 409, "upper_exists"),
            (try s.add(sameSocket), 409, "socket_in_use"),
            (try s.add(sameSocketSpelled), 409, "socket_in_use"),
            (try s.add(s.f.spec("good")), 409, "duplicate_id"),
            (try s.call("POST", "/v1/disks", #"{"id": "x", "#), 400, "bad_json"),
            (try s.call("POST", "/v1/disks", "[1,2]"), 400, "bad_json"),
            (try s.call("POST", "/v1/disks", #"{"id":"x","config":"/a","mode":"read-only","frontend":{"type":"nbd","socket":"/tmp/x.sock"},"colour":"red"}"#), 400, "unknown_field"),
            (try s.call("POST", "/v1/disks", #"{"id":"x","config":"/a","mode":"read-only","frontend":{"type":"nbd","socket":"/tmp/x.sock","speed":1}}"#), 400, "unknown_field"),
            (try s.call("POST", "/v1/disks", #"{"id":"x","config":"/a","mode":"fast","frontend":{"type":"nbd","socket":"/tmp/x.sock"}}"#), 400, "invalid_field"),
            (try s.call("POST", "/v1/disks", #"{"id":"x","mode":"read-only","frontend":{"type":"nbd","socket":"/tmp/x.sock"}}"#), 400, "invalid_field"),
            (try s.call("POST", "/v1/disks", #"{"id":"a/b","config":"/a","mode":"read-only","frontend":{"type":"nbd","socket":"/tmp/x.sock"}}"#), 400, "invalid_field"),
            (try s.call("POST", "/v1/disks", #"{"id":"x","config":"/a","mode":"writable","frontend":{"type":"nbd","socket":"/tmp/x.sock"}}"#), 400, "invalid_field"),
            (try s.call("DELETE", "/v1/disks/nobody"), 404, "no_such_disk"),
            (try s.call("GET", "/v1/disks/nobody/stats"), 404, "no_such_disk"),
            (try s.call("GET", "/v2/disks"), 404, "not_found"),
            (try s.call("PUT", "/v1/disks"), 405, "method_not_allowed"),
            (try s.call("POST", "/v1/disks", String(repeating: " ", count: ControlRoute.maxBody + 1)), 413, "body_too_large"),
        ]
        for (i, (reply, status, code)) in cases.enumerated() {
            #expect(reply.status == status, "case \(i): \(reply.text)")
            #expect(s.code(reply) == code, "case \(i): \(reply.text)")
        }
        // Nothing was left behind by the failed adds; the good disk still serves.
        #expect(s.f.registry.list().map(\.id) == ["good"])
        #expect(access(s.f.dir.file("x.sock"), F_OK) != 0)
        #expect(access(s.f.dir.file("upper-x"), F_OK) != 0)
        #expect(try s.f.nbd("good").read(4096, 512).1 == Array(s.f.content[4096..<4608]))
        #expect(s.f.registry.lowers.users.values.first == 1)
    }

    @Test("curl, an independent HTTP client, gets the same answers")
    func curlClient() throws {
        guard access("/usr/bin/curl", X_OK) == 0 else { return }
        let s = try Served()
        let out = s.f.dir.file("curl.out")
        let body = #"{"id":"c1","config":"\#(s.f.dir.file("image.json"))","mode":"read-only","frontend":{"type":"nbd","socket":"\#(s.f.dir.file("c1.sock"))"}}"#
        let status = runCommand(["/usr/bin/curl", "-s", "-o", out, "-w", "%{http_code}", "--unix-socket", s.socket,
                                 "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body, "http://obd/v1/disks"])
        #expect(status == "201")
        #expect(s.f.registry.list().map(\.id) == ["c1"])
        #expect(runCommand(["/usr/bin/curl", "-s", "-o", out, "-w", "%{http_code}", "--unix-socket", s.socket, "-X", "DELETE", "http://obd/v1/disks/c1"]) == "200")
    }

    @Test("route decoding: paths, methods, queries, bodies")
    func routes() throws {
        #expect(try ControlRoute.decode(method: "GET", target: "/v1/health", body: []) == .health)
        #expect(try ControlRoute.decode(method: "GET", target: "/v1/disks/", body: []) == .listDisks)
        #expect(try ControlRoute.decode(method: "GET", target: "/v1/disks?verbose=1", body: []) == .listDisks)
        #expect(try ControlRoute.decode(method: "DELETE", target: "/v1/disks/a.b-c_d", body: []) == .removeDisk(id: "a.b-c_d"))
        #expect(try ControlRoute.decode(method: "GET", target: "/v1/disks/x/stats", body: []) == .diskStats(id: "x"))
        #expect(throws: DaemonError.noRoute(method: "GET", path: "/v1/disks/x/y")) { try ControlRoute.decode(method: "GET", target: "/v1/disks/x/y", body: []) }
        #expect(throws: DaemonError.methodNotAllowed(method: "POST", path: "/v1/health")) { try ControlRoute.decode(method: "POST", target: "/v1/health", body: []) }
        #expect((try? ControlRoute.decode(method: "GET", target: "/v1/disks/%2e%2e", body: [])) == nil)
        #expect((try? ControlRoute.decode(method: "GET", target: "/v1/health", body: Array("{}".utf8))) == nil)
        #expect((try? ControlRoute.decode(method: "GET", target: "", body: [])) == nil)
    }
}

/// Runs `argv` and returns its stdout (trimmed).
func runCommand(_ argv: [String]) -> String {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return "" }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    var pid = pid_t()
    let cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cargs, environ)
    posix_spawn_file_actions_destroy(&actions)
    close(fds[1])
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while rc == 0 {
        let n = read(fds[0], &buf, buf.count)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    close(fds[0])
    if rc == 0 { var st: Int32 = 0; waitpid(pid, &st, 0) }
    return String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
