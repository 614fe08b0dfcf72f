// Test helper: the tests' Docker token server as a process, for the VM test (the
// registry in the guest reaches only the guest's loopback).
//   obd-token-server USER PASSWORD PORT INFO-FILE
// Writes "realm=<url>\nservice=<name>\nissuer=<name>\nca=<bundle path>\n" to INFO-FILE
// once it serves, then runs until killed.
import Glibc
import TestSupport

let a = CommandLine.arguments
guard a.count == 5, let port = UInt16(a[3]) else {
    print("usage: obd-token-server USER PASSWORD PORT INFO-FILE")
    exit(2)
}
do {
    let server = try TokenServer(user: a[1], password: a[2], port: port)
    try LocalRegistry.write(a[4] + ".tmp", "realm=\(server.realm)\nservice=\(server.service)\nissuer=\(server.issuer)\nca=\(server.caBundle)\n")
    rename(a[4] + ".tmp", a[4])
    while true { pause() }
} catch {
    print("obd-token-server: \(error)")
    exit(1)
}
