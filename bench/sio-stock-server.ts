/**
 * A second reference: stock Socket.IO with the default options and nothing
 * of ours (no registry, no logger, no middleware). A `message` event goes to
 * everyone (`io.emit`), or to a room when the payload names one, and is
 * acked; that is all. It separates what Socket.IO itself costs from what the
 * service adds on top of it.
 *
 * Run as a process: `PORT=9000 node --import tsx bench/sio-stock-server.ts`;
 * prints `listening <port>`; SIGTERM/SIGINT stop it.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? "127.0.0.1";

const server = http.createServer();
const io = new Server(server);

io.on("connection", (socket) => {
  socket.on("message", (payload: unknown, ack?: (answer: unknown) => void) => {
    const room = typeof payload === "object" && payload !== null ? (payload as { room?: unknown }).room : undefined;
    if (typeof room === "string") io.to(room).emit("message", payload);
    else io.emit("message", payload);
    if (typeof ack === "function") ack({ ok: true });
  });
});

server.listen(port, host, () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});

const stop = () => {
  io.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 500).unref();
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
