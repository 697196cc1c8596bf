/**
 * A second reference: stock Socket.IO with the default options and nothing
 * of ours (no registry, no logger, no middleware). A `message` event goes to
 * everyone (`io.emit`), or to a room when the payload names one, and is
 * acked; that is all. It separates what Socket.IO itself costs from what the
 * service adds on top of it.
 *
 * With SIO_NO_DEBUG=1 (target `sio-stock-nodebug`) the `debug` module that
 * Socket.IO and Engine.IO call on every packet is replaced by a no-op before
 * they load: what those calls cost while logging is off (they still build
 * their arguments).
 *
 * Run as a process: `PORT=9000 node --import tsx bench/sio-stock-server.ts`;
 * prints `listening <port>`; SIGTERM/SIGINT stop it.
 */
import http from "node:http";
import { createRequire, Module } from "node:module";
import type { AddressInfo } from "node:net";

if (process.env.SIO_NO_DEBUG === "1") {
  const require = createRequire(import.meta.url);
  type Debug = ((namespace: string) => unknown) & Record<string, unknown>;
  const noop = Object.assign(
    (_namespace: string) => Object.assign(() => undefined, { enabled: false, extend: () => noop("") }),
    { enable: () => undefined, disable: () => "", enabled: () => false },
  ) as unknown as Debug;
  // `require("debug")`, `require("debug").default` and `require("debug").debug` all name it.
  noop.default = noop;
  noop.debug = noop;
  for (const pkg of ["socket.io", "engine.io", "socket.io-adapter", "socket.io-parser"]) {
    // Not every package exports its package.json: find its folder from its main file.
    const main = require.resolve(pkg);
    const from = main.slice(0, main.lastIndexOf(`node_modules/${pkg}/`) + `node_modules/${pkg}`.length);
    const file = require.resolve("debug", { paths: [from] });
    const m = new Module(file);
    m.exports = noop;
    m.loaded = true;
    require.cache[file] = m;
  }
}
const { Server } = await import("socket.io");

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
