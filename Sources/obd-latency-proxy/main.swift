// Benchmark helper: the tests' FaultProxy as a process that adds a fixed latency to every
// request, standing for a registry that is not on the same machine (benchmarks/boot-bench.sh
// --latency-ms). It listens on 127.0.0.1 only and forwards to a registry on 127.0.0.1.
//   obd-latency-proxy UPSTREAM-PORT LATENCY-MS INFO-FILE
// Writes "port=<listening port>\n" to INFO-FILE once it listens, then runs until SIGTERM or
// SIGINT; at exit it prints "requests=<n> blob_reads=<n> body_bytes=<n>" on stdout.
import Glibc
import TestSupport

let a = CommandLine.arguments
guard a.count == 4, let upstream = UInt16(a[1]), let latency = Int(a[2]), latency >= 0 else {
    print("usage: obd-latency-proxy UPSTREAM-PORT LATENCY-MS INFO-FILE")
    exit(2)
}
var signals = sigset_t()
sigemptyset(&signals)
sigaddset(&signals, SIGTERM)
sigaddset(&signals, SIGINT)
pthread_sigmask(SIG_BLOCK, &signals, nil)   // before any thread starts: they inherit the mask
do {
    let proxy = try FaultProxy(upstreamPort: upstream)
    proxy.latencyMs.store(latency, ordering: .relaxed)
    try LocalRegistry.write(a[3] + ".tmp", "port=\(proxy.port)\n")
    rename(a[3] + ".tmp", a[3])
    var got: Int32 = 0
    sigwait(&signals, &got)
    proxy.stop()
    print("requests=\(proxy.requests) blob_reads=\(proxy.blobReads) body_bytes=\(proxy.bodyBytes)")
    exit(0)
} catch {
    print("obd-latency-proxy: \(error)")
    exit(1)
}
