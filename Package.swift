// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "obd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "obd", targets: ["obd"]),
        .executable(name: "obd-tcmu", targets: ["obd-tcmu"]),
        .library(name: "Threading", targets: ["Threading"]),
        .library(name: "BlockIO", targets: ["BlockIO"]),
        .library(name: "Hashing", targets: ["Hashing"]),
        .library(name: "ZFile", targets: ["ZFile"]),
        .library(name: "LSMT", targets: ["LSMT"]),
        .library(name: "Image", targets: ["Image"]),
        .library(name: "NBD", targets: ["NBD"]),
        .library(name: "Registry", targets: ["Registry"]),
        .library(name: "BlockCache", targets: ["BlockCache"]),
        .library(name: "Trace", targets: ["Trace"]),
        .library(name: "Ext4", targets: ["Ext4"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // The host daemon's control API (HTTP/1.1 on a unix socket): Daemon only.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // C libraries from Debian, reached through system-library targets.
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CISAL", providers: [.apt(["libisal-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CAIO", providers: [.apt(["libaio-dev"])]),
        .systemLibrary(name: "CNL", pkgConfig: "libnl-genl-3.0", providers: [.apt(["libnl-3-dev", "libnl-genl-3-dev"])]),
        .systemLibrary(name: "CExt2fs", pkgConfig: "ext2fs", providers: [.apt(["libext2fs-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // eventfd and memfd_create, which the Glibc module does not export (C library only).
        .systemLibrary(name: "CEventFD"),

        // Floor 0: the concurrency toolkit and the file protocol.
        .target(name: "Threading"),
        .target(name: "BlockIO", dependencies: ["Threading", "CAIO"]),
        // SHA-256 of bytes and of BlockFiles, as the lowercase hex of OCI digests.
        .target(name: "Hashing", dependencies: ["BlockIO", .product(name: "Crypto", package: "swift-crypto")]),
        // Floor 1: formats.
        .target(name: "ZFile", dependencies: ["Threading", "BlockIO", "CLZ4", "CZstd", "CISAL"]),
        .target(name: "LSMT", dependencies: ["Threading", "BlockIO"]),
        .target(name: "Registry", dependencies: [
            "Threading", "BlockIO", "Hashing", "CCurl", .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        .target(name: "BlockCache", dependencies: ["Threading", "BlockIO", .product(name: "CoreMetrics", package: "swift-metrics")]),
        .target(name: "Trace", dependencies: ["Threading", "BlockIO", "CISAL"]),
        // The gzip index (ddgzidx) and random reads of a gzip blob through it (TurboOCI).
        .target(name: "Gzip", dependencies: ["Threading", "BlockIO", "CZlib"]),
        // Read-only ext4 through libext2fs over any BlockFile (Convert adds writing).
        .target(name: "Ext4", dependencies: ["BlockIO", "CExt2fs", .product(name: "Crypto", package: "swift-crypto")]),
        // Floor 2: assembly.
        .target(name: "Image", dependencies: [
            "Threading", "BlockIO", "Hashing", "ZFile", "LSMT", "Registry", "BlockCache", "Trace", "Ext4", "Gzip",
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // Floor 3: frontends.
        .target(name: "NBD", dependencies: ["Threading", "BlockIO"]),
        .target(name: "VhostUser", dependencies: ["Threading", "BlockIO", "CEventFD"]),
        .target(name: "TCMU", dependencies: ["Threading", "BlockIO", "Image", "CNL"]),
        .target(name: "Convert", dependencies: [
            "Threading", "BlockIO", "Hashing", "LSMT", "ZFile", "Image", "Registry", "Ext4", "Trace", "Gzip", "CExt2fs", "CArchive",
        ]),
        .target(name: "MetricsExporter", dependencies: [
            "Threading", "BlockIO", .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // Floor 3: the host daemon's core: many disks over shared lowers, the control API.
        .target(name: "Daemon", dependencies: [
            "Threading", "BlockIO", "LSMT", "Image", "NBD", "VhostUser",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Floor 4: entry points.
        .executableTarget(name: "obd", dependencies: [
            "Threading", "BlockIO", "Hashing", "ZFile", "LSMT", "Image", "NBD", "VhostUser", "Registry", "BlockCache", "MetricsExporter", "Convert", "Trace", "Ext4", "Daemon",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "obd-tcmu", dependencies: [
            "TCMU", "Image", "BlockIO", "Threading", "MetricsExporter",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Benchmarks: obd and its anchors measured side by side (benchmarks/run.sh).
        .executableTarget(name: "obd-bench", dependencies: ["Threading", "BlockIO", "ZFile", "LSMT", "Image", "Registry", "BlockCache", "Trace", "TestSupport", "Ext4", "CLZ4", "CZstd"],
                          path: "benchmarks/obd-bench"),
        // Test helper: a writer that the crash test kills with SIGKILL.
        .executableTarget(name: "obd-crash-writer", dependencies: ["Threading", "BlockIO", "LSMT", "TestSupport"]),
        // Test helper: the token server as a process (the VM test runs it in the guest).
        .executableTarget(name: "obd-token-server", dependencies: ["TestSupport"]),
        // Benchmark helper: a loopback proxy adding per-request latency (benchmarks/boot-bench.sh).
        .executableTarget(name: "obd-latency-proxy", dependencies: ["TestSupport"]),

        // Shared by the tests and the crash writer: reference-file lookup, seeded data.
        .target(name: "TestSupport", dependencies: [
            "Threading", "BlockIO", .product(name: "Crypto", package: "swift-crypto"),
        ], path: "Tests/TestSupport"),
        .testTarget(name: "ThreadingTests", dependencies: ["Threading"]),
        .testTarget(name: "BlockIOTests", dependencies: ["Threading", "BlockIO", "TestSupport"]),
        .testTarget(name: "ZFileTests", dependencies: ["ZFile", "Threading", "BlockIO", "TestSupport", "CLZ4", "CZstd"]),
        .testTarget(name: "LSMTTests", dependencies: ["LSMT", "Threading", "BlockIO", "ZFile", "TestSupport"]),
        .testTarget(name: "ImageTests", dependencies: ["Image", "LSMT", "ZFile", "Threading", "BlockIO", "Registry", "BlockCache", "Trace", "Ext4", "TestSupport"]),
        .testTarget(name: "TCMUTests", dependencies: ["TCMU", "Threading", "BlockIO", "LSMT", "TestSupport"]),
        .testTarget(name: "BlockCacheTests", dependencies: ["BlockCache", "Threading", "BlockIO", "Registry", "TestSupport"]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "Threading", "BlockIO", "TestSupport"]),
        .testTarget(name: "TraceTests", dependencies: ["Trace", "Threading", "BlockIO", "TestSupport"]),
        .testTarget(name: "GzipTests", dependencies: ["Gzip", "Threading", "BlockIO", "TestSupport", "CZlib"]),
        .testTarget(name: "NBDTests", dependencies: ["NBD", "LSMT", "Threading", "BlockIO", "TestSupport"]),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "Threading", "BlockIO", "CEventFD"]),
        .testTarget(name: "DaemonTests", dependencies: ["Daemon", "Image", "LSMT", "NBD", "VhostUser", "Threading", "BlockIO", "CEventFD", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["Threading", "BlockIO", "Trace", "TestSupport"]),
        .testTarget(name: "ConvertTests", dependencies: ["Convert", "LSMT", "ZFile", "Threading", "BlockIO", "Registry", "Image", "Ext4", "Trace", "Gzip", "TestSupport"],
                    exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)

// Fuzz targets (libFuzzer). They exist only when OBD_FUZZ is set, because they link
// libFuzzer's main and so build only with -sanitize=fuzzer; tools/fuzz.sh builds them.
if Context.environment["OBD_FUZZ"] != nil {
    package.targets += [
        .executableTarget(name: "fuzz-zfile", dependencies: ["Threading", "BlockIO", "ZFile"], path: "Fuzz/fuzz-zfile"),
        .executableTarget(name: "fuzz-lsmt", dependencies: ["Threading", "BlockIO", "LSMT"], path: "Fuzz/fuzz-lsmt"),
        .executableTarget(name: "fuzz-config", dependencies: ["Image"], path: "Fuzz/fuzz-config"),
        .executableTarget(name: "fuzz-tar", dependencies: ["Threading", "BlockIO", "Ext4", "Convert"], path: "Fuzz/fuzz-tar"),
        .executableTarget(name: "fuzz-registry", dependencies: ["Registry", "Convert"], path: "Fuzz/fuzz-registry"),
        .executableTarget(name: "fuzz-trace", dependencies: ["Trace"], path: "Fuzz/fuzz-trace"),
        .executableTarget(name: "fuzz-vhost-user", dependencies: ["BlockIO", "VhostUser"], path: "Fuzz/fuzz-vhost-user"),
        .executableTarget(name: "fuzz-control-api", dependencies: ["Daemon"], path: "Fuzz/fuzz-control-api"),
        .executableTarget(name: "fuzz-gzip-index", dependencies: ["BlockIO", "Gzip", "CZlib"], path: "Fuzz/fuzz-gzip-index"),
    ]
}
