import http from "node:http";

/** How long requests in flight get to finish once the server stops listening (an HTTP broadcast waits up to the cluster timeout). */
const IN_FLIGHT_MS = 2_000;

/**
 * The instance's HTTP server (Socket.IO, /ws, the API): bounds on slow or
 * silent HTTP clients, and its two closes: stop listening (first of all),
 * then, once the gateways are closed, let requests in flight finish and cut
 * what is left.
 */
export function createHttpServer(): { server: http.Server; stopListening(): void; finish(): Promise<void> } {
  const server = http.createServer();
  // Idle connections of Socket.IO and /ws are kept alive by their own pings; these
  // bound how long a slow or silent HTTP client may hold a socket.
  server.headersTimeout = 20_000;
  server.requestTimeout = 30_000;
  // Longer than nginx's upstream keepalive_timeout (60 s), so the proxy, not
  // us, closes an idle keep-alive connection: never one it is sending on.
  server.keepAliveTimeout = 75_000;
  // Emitted once the server stopped listening and its last connection ended.
  let drained: Promise<unknown> = Promise.resolve();
  return {
    server,
    stopListening() {
      if (server.listening) {
        drained = new Promise((r) => server.once("close", r));
        server.close();
      }
      server.closeIdleConnections();
    },
    async finish() {
      await Promise.race([drained, new Promise((r) => setTimeout(r, IN_FLIGHT_MS).unref())]);
      server.closeAllConnections();
      await drained;
    },
  };
}
