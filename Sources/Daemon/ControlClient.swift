import NIOCore
import NIOHTTP1
import NIOPosix

/// A client of the control API: one HTTP/1.1 request over the daemon's unix socket
/// (swift-nio), answered within a deadline.
public enum ControlClient {
    /// The answer: HTTP status and body.
    public struct Reply: Sendable {
        public var status: Int
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Failures of the request itself (not error answers, which are a `Reply`).
    public enum Failure: Error, CustomStringConvertible {
        case connect(socket: String, detail: String)
        case timedOut(socket: String, seconds: Double)
        case broken(socket: String, detail: String)
        public var description: String {
            switch self {
            case let .connect(s, d): return "\(s): cannot connect to the daemon: \(d)"
            case let .timedOut(s, t): return "\(s): no answer from the daemon within \(t) s"
            case let .broken(s, d): return "\(s): \(d)"
            }
        }
    }

    /// Sends `method target` with `body` (JSON) to the daemon at `socket` and waits up to
    /// `timeout` seconds for the whole answer.
    public static func request(socket: String, method: String, target: String, body: [UInt8]? = nil,
                               timeout: Double = 120) throws(Failure) -> Reply {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let promise = loop.makePromise(of: Reply.self)
        let channel: any Channel
        do {
            channel = try ClientBootstrap(group: group)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHTTPClientHandlers()
                        try ch.pipeline.syncOperations.addHandler(ReplyCollector(promise: promise))
                    }
                }
                .connect(unixDomainSocketPath: socket)
                .wait()
        } catch {
            promise.fail(error)
            throw .connect(socket: socket, detail: "\(error)")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "obd")
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: target, headers: headers)
        let payload = body
        loop.execute {
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let payload {
                var b = channel.allocator.buffer(capacity: payload.count)
                b.writeBytes(payload)
                channel.write(HTTPClientRequestPart.body(.byteBuffer(b)), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        // The deadline fails the promise unless the answer came first (both on the loop).
        let timer = loop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            promise.fail(Failure.timedOut(socket: socket, seconds: timeout))
        }
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        do {
            return try promise.futureResult.wait()
        } catch let f as Failure {
            throw f
        } catch {
            throw .broken(socket: socket, detail: "\(error)")
        }
    }
}

/// Gathers one response and completes the promise once (on the event loop).
private final class ReplyCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<ControlClient.Reply>
    private var status = 0
    private var body: [UInt8] = []
    private var done = false

    init(promise: EventLoopPromise<ControlClient.Reply>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(h): status = Int(h.status.code)
        case var .body(b): body += b.readBytes(length: b.readableBytes) ?? []
        case .end:
            finish(.success(ControlClient.Reply(status: status, body: body)))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(ControlClient.Failure.broken(socket: "", detail: "the daemon closed the connection before answering")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
        context.close(promise: nil)
    }

    private func finish(_ result: Result<ControlClient.Reply, any Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }
}
