import net from "node:net";
import { expect } from "chai";
import { poll } from "../harness/waiting.js";
import { Server } from "socket.io";
import { BurstWrites } from "../server/realtime/burst-writes.js";
import { joinPreEncodedFrames, wholeTextFrame } from "../server/realtime/prebuilt-frames.js";
import type WebSocket from "ws";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type IoClient, type WsClient } from "./helpers/clients.js";
import { metric, readMetrics } from "./helpers/metrics.js";

/**
 * Bursts: broadcasts delivered in one event-loop turn leave in one write a
 * connection (every WebSocket is corked for the rest of the turn). The same
 * bytes, in the same order, to everyone once; a lone broadcast is not batched;
 * a client that stops reading is still cut.
 */
describe("batched writes in bursts", function () {
  this.timeout(60_000);
  const defer = useCleanup();

  /** `count` text frames written to the server in one TCP write, so it parses and publishes them in one turn. */
  const burst = (from: WsClient, texts: string[]): void => {
    const socket = (from.ws as unknown as { _socket: import("node:net").Socket })._socket;
    socket.cork();
    for (const text of texts) from.ws.send(text);
    socket.uncork();
  };
  const bursts = async (t: TestApp) => metric(await readMetrics(t.url), "wbs_write_bursts_total") ?? 0;

  async function clientsOf(t: TestApp) {
    const io = await connectIo(t.url, { clientId: "io-ws" });
    const polling = await connectIo(t.url, { clientId: "io-polling", transports: ["polling"] });
    const text = await connectWs(`${t.wsUrl}/ws`);
    const json = await connectWs(`${t.wsUrl}/ws?format=json`);
    const publisher = await connectWs(`${t.wsUrl}/ws?format=json`);
    for (const c of [io, polling, text, json, publisher]) defer(() => c.close());
    await Promise.all([io.next("welcome"), polling.next("welcome"), text.next(), json.nextJson("welcome"), publisher.nextJson("welcome")]);
    return { io, polling, text, json, publisher };
  }

  const ioTexts = (c: IoClient, prefix: string) =>
    c.inbox.all((e) => e.event === "message" && (e.args[0] as { text: string }).text.startsWith(prefix)).map((e) => (e.args[0] as { text: string }).text);
  const wsTexts = (c: WsClient, prefix: string) =>
    c.inbox.items
      .map((f) => /"text":"([^"]*)"|says: (.*)$/.exec(f))
      .flatMap((m) => (m ? [m[1] ?? m[2]!] : []))
      .filter((t) => t.startsWith(prefix));

  it("delivers a burst to every client on every transport once, in order, and batches it", async () => {
    const t = await startApp({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    defer(() => t.close());
    const { io, polling, text, json, publisher } = await clientsOf(t);
    const before = await bursts(t);
    const sent = Array.from({ length: 200 }, (_, i) => `b:${i}`);
    burst(publisher, sent);
    await io.next("message", (m: { text: string }) => m.text === "b:199", 10_000);
    await polling.next("message", (m: { text: string }) => m.text === "b:199", 10_000);
    await text.next((f) => f.endsWith("b:199"), 10_000);
    await json.nextJson("message", (m: { text: string }) => m.text === "b:199", 10_000);
    for (const [who, got] of [
      ["socket.io websocket", ioTexts(io, "b:")],
      ["socket.io polling", ioTexts(polling, "b:")],
      ["/ws text", wsTexts(text, "b:")],
      ["/ws json", wsTexts(json, "b:")],
    ] as const)
      expect(got, who).to.deep.equal(sent);
    expect(await bursts(t), "turns batched").to.be.greaterThan(before);
  });

  it("writes a lone broadcast at once: paced broadcasts are never batched", async () => {
    const t = await startApp({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    defer(() => t.close());
    const { io, text, publisher } = await clientsOf(t);
    const before = await bursts(t);
    for (let i = 0; i < 20; i++) {
      publisher.ws.send(`p:${i}`);
      await io.next("message", (m: { text: string }) => m.text === `p:${i}`);
      await text.next((f) => f.endsWith(`p:${i}`));
    }
    expect(await bursts(t)).to.equal(before);
  });

  it("still cuts a client that stops reading while bursts are batched, and the others get everything", async () => {
    const LIMIT = 256 * 1024;
    const t = await startApp({ RATE_LIMIT_MESSAGES_PER_SEC: "0", MAX_BUFFERED_BYTES: String(LIMIT), MAX_MESSAGE_BYTES: "65536", LOG_LEVEL: "info" });
    defer(() => t.close());
    const { io, text, publisher } = await clientsOf(t);
    const slow = await connectWs(`${t.wsUrl}/ws/slow`);
    defer(() => slow.close());
    await slow.next();
    slow.ws.pause();
    (slow.ws as WebSocket).on("error", () => undefined);
    const cut = t.logs.next((r) => r.msg.startsWith("slow client cut") && r.clientId === "slow", 30_000);
    let done = false;
    void cut.then(
      () => (done = true),
      () => (done = true),
    );
    const body = "x".repeat(30_000);
    let rounds = 0;
    // Bursts of ten large messages until the slow one is cut (bounded: 20 MB).
    while (!done && rounds < 70) {
      const texts = Array.from({ length: 10 }, (_, i) => `s:${rounds * 10 + i}:${body}`);
      burst(publisher, texts);
      await io.next("message", (m: { text: string }) => m.text.startsWith(`s:${rounds * 10 + 9}:`), 10_000);
      rounds++;
    }
    expect((await cut).queuedBytes as number).to.be.greaterThan(LIMIT);
    const last = `s:${rounds * 10 - 1}:`;
    await text.next((f) => f.includes(last), 10_000);
    const expected = Array.from({ length: rounds * 10 }, (_, i) => i);
    expect(ioTexts(io, "s:").map((s) => Number(s.split(":")[1]))).to.deep.equal(expected);
    expect(
      text.inbox.items.filter((f) => f.includes(": s:")).map((f) => Number(f.split(": s:")[1]!.split(":")[0])),
      "/ws text",
    ).to.deep.equal(expected);
    expect(await bursts(t)).to.be.greaterThan(0);
  });

  it("forgets closed connections at its sweep (no close listener a connection)", async () => {
    const server = net.createServer((s) => s.on("error", () => undefined));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    defer(() => new Promise<void>((r) => server.close(() => r())));
    const writes = new BurstWrites(undefined, 20);
    defer(() => writes.stop());
    const { port } = server.address() as net.AddressInfo;
    const sockets = await Promise.all(
      Array.from(
        { length: 5 },
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const s = net.connect(port, "127.0.0.1", () => resolve(s)).once("error", reject);
          }),
      ),
    );
    for (const s of sockets) writes.track(s);
    for (const s of sockets.slice(0, 3)) s.destroy();
    await poll(() => (writes.size === 2 ? true : undefined), { timeoutMs: 5_000, everyMs: 10, what: "the sweep" });
    expect(sockets.slice(3).every((s) => s.listenerCount("close") === 0)).to.equal(true);
    for (const s of sockets.slice(3)) s.destroy();
    await poll(() => (writes.size === 0 ? true : undefined), { timeoutMs: 5_000, everyMs: 10, what: "the sweep" });
  });

  it("frames a broadcast whole once: one Buffer a frame for /ws and for Socket.IO's adapter", async () => {
    const frame = wholeTextFrame("héllo");
    // FIN + text opcode, unmasked length 6 (UTF-8), then the payload.
    expect([...frame.subarray(0, 2)]).to.deep.equal([0x81, 6]);
    expect(frame.subarray(2).toString()).to.equal("héllo");
    expect(wholeTextFrame("x".repeat(70_000)).length).to.equal(70_000 + 10);

    // A Socket.IO server attached to nothing: just its namespace and adapter.
    const io = new Server();
    const adapter = io.of("/").adapter as unknown as { _encode(packet: unknown, opts: { wsPreEncodedFrame?: Buffer[] }): unknown };
    const plain: { wsPreEncodedFrame?: Buffer[] } = {};
    const packet = { type: 2, nsp: "/", data: ["message", { text: "hi" }] };
    adapter._encode(packet, plain);
    expect(plain.wsPreEncodedFrame, "socket.io-adapter still pre-encodes a frame").to.have.length(2);
    expect(joinPreEncodedFrames(adapter), "the adapter has _encode to hook").to.equal(true);
    const joined: { wsPreEncodedFrame?: Buffer[] } = {};
    adapter._encode(packet, joined);
    expect(joined.wsPreEncodedFrame).to.have.length(1);
    expect(joined.wsPreEncodedFrame![0]!.equals(Buffer.concat(plain.wsPreEncodedFrame!))).to.equal(true);
  });

  it("writes a broadcast whole to Socket.IO WebSocket clients, through Engine.IO to polling ones: the same message either way", async () => {
    const t = await startApp({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    defer(() => t.close());
    const { io, polling, publisher } = await clientsOf(t);
    const io2 = await connectIo(t.url, { clientId: "io-ws-2" });
    defer(() => io2.close());
    await io2.next("welcome");
    const frames = async () => {
      const m = await readMetrics(t.url);
      const path = (p: string) => metric(m, `wbs_socketio_broadcast_frames_total{path="${p}"}`) ?? 0;
      return { direct: path("direct"), engine: path("engine.io") };
    };
    const before = await frames();
    publisher.ws.send(JSON.stringify({ text: "whole" }));
    const got = await Promise.all([io, io2, polling].map((c) => c.next("message", (m: { text: string }) => m.text === "whole")));
    expect(got[1]).to.deep.equal(got[0]);
    expect(got[2]).to.deep.equal(got[0]);
    const after = await frames();
    expect({ direct: after.direct - before.direct, engine: after.engine - before.engine }).to.deep.equal({ direct: 2, engine: 1 });
  });

  it("keeps order across the switch from Engine.IO to the direct write: clients upgrading from polling while a publisher sends nonstop get every number once, in order", async () => {
    const t = await startApp({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    defer(() => t.close());
    const publisher = await connectWs(`${t.wsUrl}/ws?format=json`);
    defer(() => publisher.close());
    await publisher.nextJson("welcome");
    let sent = 0;
    let publishing = true;
    // Small bursts, each in one TCP write, back to back: deliveries on both paths all along.
    const pump = (async () => {
      while (publishing) {
        burst(
          publisher,
          Array.from({ length: 5 }, () => `u:${sent++}`),
        );
        await new Promise((r) => setImmediate(r));
      }
    })();
    const clients = await Promise.all(Array.from({ length: 6 }, (_, i) => connectIo(t.url, { clientId: `up-${i}`, transports: ["polling", "websocket"] })));
    for (const c of clients) defer(() => c.close());
    await Promise.all(
      clients.map((c) => (c.socket.io.engine.transport.name === "websocket" ? undefined : new Promise((r) => c.socket.io.engine.once("upgrade", r)))),
    );
    // More after every client upgraded, then stop and wait for the last one everywhere.
    const upgradedAt = sent;
    while (sent < upgradedAt + 200) await new Promise((r) => setImmediate(r));
    publishing = false;
    await pump;
    const last = `u:${sent - 1}`;
    await Promise.all(clients.map((c) => c.next("message", (m: { text: string }) => m.text === last, 10_000)));
    for (const [i, c] of clients.entries()) {
      const got = ioTexts(c, "u:").map((x) => Number(x.slice(2)));
      expect(got.length, `client ${i} got some before its upgrade`).to.be.greaterThan(0);
      const first = got[0]!;
      expect(got, `client ${i}`).to.deep.equal(Array.from({ length: sent - first }, (_, k) => first + k));
    }
    const m = await readMetrics(t.url);
    expect(metric(m, 'wbs_socketio_broadcast_frames_total{path="direct"}') ?? 0, "some went direct").to.be.greaterThan(0);
    expect(metric(m, 'wbs_socketio_broadcast_frames_total{path="engine.io"}') ?? 0, "some went through Engine.IO").to.be.greaterThan(0);
  });

  it("never lets a broadcast overtake what Engine.IO holds for a client: its ack, sent first, arrives first", async () => {
    // X stops reading until its socket is full, so Engine.IO's next write to
    // it (an ack) waits and the one after (a second ack) is queued in
    // Engine.IO; a broadcast made after that must reach X after that ack.
    const t = await startApp({ RATE_LIMIT_MESSAGES_PER_SEC: "0", MAX_MESSAGE_BYTES: "1048576", MAX_BUFFERED_BYTES: "0" });
    defer(() => t.close());
    const x = await connectIo(t.url, { clientId: "x" });
    const p = await connectIo(t.url, { clientId: "p" });
    for (const c of [x, p]) defer(() => c.close());
    await Promise.all([x.next("welcome"), p.next("welcome")]);
    const seen: string[] = [];
    x.socket.on("message", (m: { text: string }) => seen.push(m.text.slice(0, 12)));
    const tcp = (x.socket.io.engine.transport as unknown as { ws: { _socket: import("node:net").Socket } }).ws._socket;
    tcp.pause();
    // 24 MiB of broadcasts to X, far past what loopback's socket buffers hold.
    const big = "f".repeat(1_000_000);
    for (let i = 0; i < 24; i++) {
      p.socket.emit("message", `fill:${i}:${big}`);
      await p.next("message", (m: { text: string }) => m.text.startsWith(`fill:${i}:`), 10_000);
    }
    const acked = (text: string) => x.socket.emit("message", text, () => seen.push(`ack:${text}`));
    acked("a1");
    await p.next("message", (m: { text: string }) => m.text === "a1", 10_000);
    acked("a2");
    await p.next("message", (m: { text: string }) => m.text === "a2", 10_000);
    p.socket.emit("message", "after-a2");
    await p.next("message", (m: { text: string }) => m.text === "after-a2", 10_000);
    tcp.resume();
    await x.next("message", (m: { text: string }) => m.text === "after-a2", 30_000);
    const tail = seen.filter((e) => !e.startsWith("fill:"));
    expect(tail.indexOf("ack:a2"), JSON.stringify(tail)).to.be.greaterThan(-1);
    expect(tail.indexOf("ack:a2"), JSON.stringify(tail)).to.be.lessThan(tail.indexOf("after-a2"));
    expect(tail.indexOf("ack:a1")).to.be.lessThan(tail.indexOf("ack:a2"));
  });
});
