/**
 * The baseline: a minimal broadcast server on bare `ws`. Every text frame a
 * client sends goes to every connected client (the sender too, as the
 * service does), sent the plain way, one `send` a client. `/echo` answers a
 * frame to its sender only (the echo scenario's floor).
 *
 * Run as a process: `PORT=9000 node --import tsx bench/raw-ws-server.ts`;
 * prints `listening <port>` once it accepts connections; SIGTERM/SIGINT stop it.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type WebSocket, WebSocketServer } from "ws";

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? "127.0.0.1";

const server = http.createServer((_req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 65_536 });

wss.on("connection", (ws: WebSocket, req) => {
  const echo = req.url === "/echo";
  ws.on("message", (data, isBinary) => {
    if (echo) {
      ws.send(data, { binary: isBinary });
      return;
    }
    for (const client of wss.clients) {
      if (client.readyState === client.OPEN) client.send(data, { binary: isBinary });
    }
  });
  ws.on("error", () => ws.terminate());
});

server.listen(port, host, () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});

const stop = () => {
  for (const client of wss.clients) client.terminate();
  wss.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1_000).unref();
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
