import type { IncomingMessage } from "node:http";
import { setImmediate as tick } from "node:timers/promises";
import v8 from "node:v8";
import vm from "node:vm";
import { expect } from "chai";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/**
 * What an idle connection keeps. The HTTP request that opened it (headers,
 * raw headers, URL, stream state: over a kilobyte) must be collectable once
 * the connection is open, whoever held it during the handshake.
 */
describe("memory of idle connections", () => {
  const defer = useCleanup();
  let t: TestApp;
  let requests: { url: string; ref: WeakRef<IncomingMessage> }[];

  beforeEach(async () => {
    t = await startApp();
    defer(() => t.close());
    requests = [];
    const track = (req: IncomingMessage) => requests.push({ url: req.url ?? "", ref: new WeakRef(req) });
    t.app.server.on("upgrade", track);
    t.app.server.on("request", track);
  });

  /** URLs of tracked requests still alive after a full GC. */
  async function survivors(): Promise<string[]> {
    await tick(); // WeakRef targets stay alive until the current job ends
    gc();
    return requests.filter((r) => r.ref.deref() !== undefined).map((r) => r.url);
  }

  for (const transports of [["websocket"], ["polling", "websocket"]] as const) {
    it(`keeps no handshake request for open Socket.IO sessions (${transports.join(" → ")})`, async () => {
      const clients = await Promise.all(Array.from({ length: 5 }, () => connectIo(t.url, { transports: [...transports] })));
      defer(() => clients.forEach((c) => c.close()));
      for (const c of clients) await c.next("welcome");
      if (transports.length === 2) {
        // Wait until every session has upgraded; then the polling requests are done too.
        for (const c of clients) {
          if (c.socket.io.engine.transport.name !== "websocket") await new Promise((r) => c.socket.io.engine.once("upgrade", r));
        }
      }
      expect(
        requests.some((r) => r.url.includes("transport=websocket")),
        "saw the upgrades",
      ).to.equal(true);
      expect(await survivors()).to.deep.equal([]);
      // Still connected and served.
      clients[0]!.socket.emit("message", "after gc");
      await clients[4]!.next("message", (m: { text: string }) => m.text === "after gc");
    });
  }

  it("keeps no handshake request for open /ws and /ws/{clientId} connections", async () => {
    const clients = await Promise.all([connectWs(`${t.wsUrl}/ws`), connectWs(`${t.wsUrl}/ws/mem-1`), connectWs(`${t.wsUrl}/ws?format=json`)]);
    defer(() => clients.forEach((c) => c.close()));
    for (const c of clients) await c.next();
    expect(requests).to.have.length(3);
    expect(await survivors()).to.deep.equal([]);
    clients[0]!.ws.send("after gc");
    await clients[1]!.next((f) => f.includes("after gc"));
  });

  it("puts no close listener of its own on an open connection's socket (only the WebSocket library's)", async () => {
    // A listener a connection (a closure, a once-wrapper, a listener array; Engine.IO's
    // relay also holds its response object) is hundreds of bytes on every idle connection.
    const sockets: { url: string; socket: import("node:stream").Duplex }[] = [];
    t.app.server.on("upgrade", (req: IncomingMessage, socket) => sockets.push({ url: req.url ?? "", socket }));
    const io = await connectIo(t.url, { transports: ["websocket"] });
    const ws = await connectWs(`${t.wsUrl}/ws`);
    defer(() => io.close());
    defer(() => ws.close());
    await io.next("welcome");
    await ws.next();
    expect(sockets.map((s) => (s.url.startsWith("/ws") ? "/ws" : "socket.io"))).to.have.members(["/ws", "socket.io"]);
    for (const { url, socket } of sockets) expect(socket.listenerCount("close"), url).to.equal(1);
  });
});
