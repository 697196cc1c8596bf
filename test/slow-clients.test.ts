import { expect } from "chai";
import type WebSocket from "ws";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";

const LIMIT = 256 * 1024;
const TEXT = "x".repeat(60_000);

describe("slow clients (MAX_BUFFERED_BYTES)", function () {
  this.timeout(60_000);
  const defer = useCleanup();
  let t: TestApp;

  beforeEach(async () => {
    t = await startApp({ MAX_BUFFERED_BYTES: String(LIMIT), LOG_LEVEL: "info" });
    defer(() => t.close());
  });

  it("cuts a client that stops reading, on /ws and Socket.IO, and keeps delivering everything to the others", async () => {
    const fastWs = await connectWs(`${t.wsUrl}/ws/fast-ws`);
    const fastIo = await connectIo(t.url, { clientId: "fast-io" });
    const slowWs = await connectWs(`${t.wsUrl}/ws/slow-ws`);
    const slowIo = await connectIo(t.url, { clientId: "slow-io", reconnection: false });
    defer(() => [fastWs, fastIo, slowWs, slowIo].forEach((c) => c.close()));
    await fastIo.next("welcome");
    await slowIo.next("welcome");
    await fastWs.next();
    await slowWs.next();

    // The slow ones stop reading their TCP sockets (the kernel buffers fill, then the server's).
    slowWs.ws.pause();
    (slowIo.socket.io.engine.transport as unknown as { ws: WebSocket }).ws.pause();

    const cut = (transport: string) => t.logs.next((r) => r.msg.startsWith("slow client cut") && r.transport === transport, 30_000);
    const cuts = Promise.all([cut("ws"), cut("socket.io")]);
    let done = false;
    void cuts.then(
      () => (done = true),
      () => (done = true),
    );

    // Broadcast until both are cut (bounded: 40 MB at most).
    let published = 0;
    while (!done && published < 700) {
      const res = await fetch(`${t.url}/broadcast-to-all`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: `${published}:${TEXT}` }),
      });
      expect(res.status).to.equal(200);
      published++;
    }
    const [wsCut, ioCut] = await cuts;
    expect(wsCut).to.include({ clientId: "slow-ws", level: "warn" });
    expect(ioCut).to.include({ clientId: "slow-io" });
    expect(wsCut.queuedBytes as number).to.be.greaterThan(LIMIT);
    expect(ioCut.queuedBytes as number).to.be.greaterThan(LIMIT);

    // Gone from the server at once, although they have not read a byte since.
    const { clients } = (await (await fetch(`${t.url}/clients`)).json()) as { clients: string[] };
    expect(clients).to.have.members(["fast-ws", "fast-io"]);
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    expect(metrics).to.match(/^wbs_slow_clients_cut_total\{transport="ws"\} 1$/m);
    expect(metrics).to.match(/^wbs_slow_clients_cut_total\{transport="socket.io"\} 1$/m);

    // Once they read again they find the connection closed (Socket.IO would reconnect by itself).
    const ioGone = new Promise<string>((resolve) => slowIo.socket.once("disconnect", resolve));
    slowWs.ws.resume();
    (slowIo.socket.io.engine.transport as unknown as { ws: WebSocket }).ws.resume();
    expect((await slowWs.closed).code).to.equal(1006);
    expect(await ioGone).to.match(/^transport (close|error)$/);

    // The others got every broadcast, in order, and are still served.
    const last = `${published - 1}:`;
    await fastWs.next((f) => f.startsWith(last), 20_000);
    await fastIo.next("message", (m: { text: string }) => m.text.startsWith(last), 20_000);
    const wsSeen = fastWs.inbox.items.filter((f) => f.endsWith(TEXT)).map((f) => Number(f.split(":")[0]));
    const ioSeen = fastIo.inbox.items.filter((e) => e.event === "message").map((e) => Number((e.args[0] as { text: string }).text.split(":")[0]));
    const all = Array.from({ length: published }, (_, i) => i);
    expect(wsSeen).to.deep.equal(all);
    expect(ioSeen).to.deep.equal(all);
    fastIo.socket.emit("message", "still here");
    await fastWs.next((f) => f.includes("still here"));
  });

  it("cuts nobody when MAX_BUFFERED_BYTES=0", async () => {
    const app = await startApp({ MAX_BUFFERED_BYTES: "0", INSTANCE_ID: "off" });
    defer(() => app.close());
    const slow = await connectWs(`${app.wsUrl}/ws/slow`);
    defer(() => slow.close());
    await slow.next();
    slow.ws.pause();
    for (let i = 0; i < 300; i++) {
      await fetch(`${app.url}/broadcast-to-all`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: `${i}:${TEXT}` }),
      });
    }
    slow.ws.resume();
    await slow.next((f) => f.startsWith("299:"), 20_000);
    expect(app.logs.items.some((r) => r.msg.startsWith("slow client cut"))).to.equal(false);
  });
});
