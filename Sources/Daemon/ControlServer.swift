import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import Threading

/// The control API's transport: HTTP/1.1 on a unix socket (swift-nio), one event-loop
/// thread for the connections, and a pool of workers that run the requests, so an add
/// that waits for its lowers to open holds up neither the event loop nor other adds.
public final class ControlServer: Sendable {
    /// Where the server listens.
    public let socketPath: String
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let workers: WorkerPool

    /// Binds `socketPath` (a stale socket file is replaced; the socket is made 0600: the
    /// API can make files wherever the daemon can) and serves `api`.
    /// - Parameter workers: requests run at once.
    public init(socketPath: String, api: ControlAPI, workers: Int = 16) throws(DaemonError) {
        self.socketPath = socketPath
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = WorkerPool(threads: workers, capacity: 256, name: "obd-control")
        let channel: any Channel
        do {
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 128)
                .childChannelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try ch.pipeline.syncOperations.addHandler(ControlHTTPHandler(api: api, pool: pool))
                    }
                }
                .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true)
                .wait()
        } catch {
            pool.shutdown()
            try? group.syncShutdownGracefully()
            throw .frontendFailed(socket: socketPath, detail: "control API cannot listen: \(error)")
        }
        chmod(socketPath, 0o600)
        self.group = group
        self.channel = channel
        self.workers = pool
    }

    /// Stops listening, lets running requests finish, and removes the socket file.
    public func stop() {
        try? channel.close().wait()
        workers.shutdown()
        try? group.syncShutdownGracefully()
        unlink(socketPath)
    }
}

/// One connection's requests: the body is gathered (up to `ControlRoute.maxBody`), the
/// request runs on a worker, and the answer is written back on the event loop.
final class ControlHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: ControlAPI
    private let pool: WorkerPool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(api: ControlAPI, pool: WorkerPool) {
        self.api = api
        self.pool = pool
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(h):
            head = h
            body = []
            tooLarge = false
        case var .body(buffer):
            if body.count + buffer.readableBytes > ControlRoute.maxBody {
                tooLarge = true
                body = []
            } else if !tooLarge, let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let h = head else { return }
            head = nil
            let keepAlive = h.isKeepAlive
            let api = api
            let request = (method: h.method.rawValue, target: h.uri, body: body, tooLarge: tooLarge)
            body = []
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let loop = context.eventLoop
            let queued = pool.trySubmit {
                let response = request.tooLarge ? ControlAPI.error(.bodyTooLarge(limit: ControlRoute.maxBody))
                    : api.respond(method: request.method, target: request.target, body: request.body)
                loop.execute {
                    let (handler, context) = bound.value
                    handler.write(response, keepAlive: keepAlive, context: context)
                }
            }
            if !queued {
                write(ControlAPI.error(.shuttingDown), keepAlive: false, context: context)
            }
        }
    }

    private func write(_ response: ControlAPI.Response, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
