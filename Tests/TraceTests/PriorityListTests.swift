import Testing
import Trace

/// The priority-list parser: a parser of untrusted bytes (an image's acceleration layer).
@Suite("Priority list parsing")
struct PriorityListTests {
    func parse(_ text: String) throws -> PriorityList { try PriorityList(bytes: Array(text.utf8), path: "list") }

    @Test("paths, directory lines (/ and *), trimming, CRLF, empty lines, . and ..")
    func basics() throws {
        let l = try parse("/etc/passwd\n  /usr/lib/ \r\n\t/usr/share/*\n\n/a/./b/../c\r\n/\n/x/y*\n")
        #expect(l.entries.map(\.path) == ["/etc/passwd", "/usr/lib/", "/usr/share/", "/a/c", "/", "/x/y/"])
        #expect(l.entries.map(\.walk) == [false, true, true, false, true, true])
        #expect(l.entries.map(\.line) == [1, 2, 3, 5, 6, 7])
        #expect(l.entries[0].components == ["etc", "passwd"] && l.entries[4].components == [])
        #expect(l.skipped.isEmpty)
    }

    @Test("no line escapes the root: .. at the top stays at the root")
    func dotDot() throws {
        let l = try parse("/../../etc/shadow\n/a/../../../b\n/..\n")
        #expect(l.entries.map(\.components) == [["etc", "shadow"], ["b"], []])
    }

    @Test("unusable lines are skipped with a reason, the rest is kept", arguments: [
        ("relative/path", "not an absolute path"),
        ("~/x", "not an absolute path"),
        ("/a\u{0}b", "control byte 0x0"),
        ("/a\u{1B}[31mred", "control byte 0x1b"),
        ("/a\u{7F}", "control byte 0x7f"),
        ("/" + String(repeating: "n", count: 256), "longer than 255 bytes"),
    ])
    func skipped(line: String, reason: String) throws {
        let l = try parse("/ok\n" + line + "\n/also-ok\n")
        #expect(l.entries.map(\.path) == ["/ok", "/also-ok"])
        #expect(l.skipped.count == 1 && l.skipped[0].line == 2 && l.skipped[0].reason.contains(reason), "\(l.skipped)")
    }

    @Test("invalid UTF-8 and binary garbage are skipped, never a crash")
    func garbage() throws {
        let bad = try PriorityList(bytes: [0x2F, 0xFF, 0xFE, 0x0A, 0x2F, 0x6F, 0x6B], path: "list")
        #expect(bad.entries.map(\.path) == ["/ok"] && bad.skipped.map(\.reason) == ["not UTF-8"])
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let bytes = (0..<Int.random(in: 0...4096, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let l = try PriorityList(bytes: bytes, path: "random")
            #expect(l.entries.count + l.skipped.count <= bytes.count + 1)
            #expect(l.entries.allSatisfy { $0.components.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("/") } })
        }
    }

    @Test("at most 64 KiB: 65,536 bytes parse, 65,537 are refused with the size")
    func size() throws {
        let max = [UInt8](repeating: UInt8(ascii: "\n"), count: PriorityList.maxSize)
        #expect(try PriorityList(bytes: max, path: "l").entries.isEmpty)
        #expect(throws: TraceError.priorityListTooLarge(path: "l", size: 65537)) {
            try PriorityList(bytes: max + [0x2F], path: "l")
        }
        #expect("\(TraceError.priorityListTooLarge(path: "l", size: 65537))".contains("over the limit of 65536 bytes"))
        // Many tiny lines: linear work, one entry each.
        let many = try PriorityList(bytes: Array(String(repeating: "/\n", count: 32768).utf8), path: "l")
        #expect(many.entries.count == 32768)
    }

    @Test("a trace is not a list: the magic decides")
    func magic() {
        #expect(TraceFormat.hasMagic(TraceFormat.encode([])))
        #expect(!TraceFormat.hasMagic(Array("/usr/bin/\n".utf8)))
    }
}
