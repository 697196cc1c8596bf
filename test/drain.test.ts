import { expect } from "chai";
import { Manager } from "socket.io-client";
import { freePort } from "../harness/ports.js";
import { type InstanceProcess, startInstance } from "../harness/instance.js";
import { startRedis } from "../harness/redis.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, ioRefusal, wrapIo, wsRefusal } from "./helpers/clients.js";

/** A real instance process; SIGTERM is what a deploy sends it. */
async function instance(defer: (t: () => unknown) => void, env: Record<string, string> = {}): Promise<InstanceProcess> {
  const inst = await startInstance({
    env: {
      PORT: String(await freePort()),
      INSTANCE_ID: "d1",
      PERIODIC_INTERVAL_SEC: "0",
      PROGRESS_LOG_EVERY_SEC: "0.1",
      FORCED_SHUTDOWN_AFTER_SEC: "30",
      ...env,
    },
  });
  defer(() => inst.stop(500));
  return inst;
}

const ws = (url: string) => url.replace(/^http/, "ws");

describe("graceful drain (real process, real signals)", function () {
  this.timeout(20_000);
  const defer = useCleanup();

  it("keeps serving connected clients on every transport and refuses new ones", async () => {
    const inst = await instance(defer);
    const sio = await connectIo(inst.url, { clientId: "ws-client", transports: ["websocket"] });
    const poll = await connectIo(inst.url, { clientId: "poll-client", transports: ["polling"] });
    const text = await connectWs(`${ws(inst.url)}/ws`);
    const echo = await connectWs(`${ws(inst.url)}/ws/7?format=json`);
    defer(() => [sio, poll, text, echo].forEach((c) => c.close()));
    // An Engine.IO session open before the drain, with no namespace joined yet.
    const manager = new Manager(inst.url, { transports: ["polling"], reconnection: false, autoConnect: false });
    await new Promise<void>((resolve, reject) => manager.open((err) => (err ? reject(err) : resolve())));
    defer(() => manager.engine?.close());

    inst.signal("SIGTERM");
    await inst.waitForLog((r) => r.msg.startsWith("draining"));

    // Told once, on every transport.
    for (const c of [sio, poll])
      expect(await c.next("notification", (n: { type: string }) => n.type === "draining")).to.include({ type: "draining", instance: "d1" });
    expect(await text.next((l) => l.includes("draining"))).to.match(/^\[\d\d:\d\d:\d\d\] SYSTEM \(d1\): instance is draining/);
    expect(await echo.nextJson("notification")).to.include({ type: "draining", instance: "d1" });

    // Probes.
    const ready = await fetch(`${inst.url}/readyz`);
    expect(ready.status).to.equal(503);
    expect(await (await fetch(`${inst.url}/healthz`)).json()).to.include({ status: "ok", draining: true });

    // New sessions: 503 with Retry-After, polling and WebSocket handshakes and /ws.
    const handshake = await fetch(`${inst.url}/socket.io/?EIO=4&transport=polling`);
    expect(handshake.status).to.equal(503);
    expect(handshake.headers.get("retry-after")).to.equal("1");
    expect(await handshake.json()).to.deep.equal({ error: "server is draining", code: "DRAINING" });
    const wsHandshake = await wsRefusal(`${ws(inst.url)}/socket.io/?EIO=4&transport=websocket`);
    expect(wsHandshake.status).to.equal(503);
    for (const path of ["/ws", "/ws/99"]) {
      const refused = await wsRefusal(`${ws(inst.url)}${path}`);
      expect(refused.status, path).to.equal(503);
      expect(refused.headers["retry-after"]).to.equal("1");
    }
    const err = await ioRefusal(inst.url, { transports: ["polling"] });
    expect(err.message).to.match(/xhr poll error/);

    // A socket that reaches the namespace anyway (its session predates the drain) is refused by the middleware.
    const late = wrapIo(manager.socket("/"));
    const refusal = await new Promise<Error & { data?: unknown }>((resolve) => {
      late.socket.once("connect_error", resolve);
      late.socket.connect();
    });
    expect(refusal.message).to.equal("server is draining");
    expect(refusal.data).to.deep.equal({ code: "DRAINING" });

    // Existing clients keep sending and receiving, both ways.
    await sio.socket.emitWithAck("message", "during drain");
    for (const c of [sio, poll]) expect((await c.next("message")).text).to.equal("during drain");
    expect(await text.next((l) => l.startsWith("User"))).to.equal("User ws-client (via d1) says: during drain");
    text.ws.send("from /ws during drain");
    expect((await poll.next("message")).text).to.equal("from /ws during drain");
    const res = await fetch(`${inst.url}/broadcast-to-all`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"message":"http during drain"}',
    });
    expect(await res.json()).to.deep.equal({ sent: 4, partial: false });
    expect(await sio.next("message", (m: { text: string }) => m.text === "http during drain")).to.include({ origin: "http" });
    echo.ws.send("echo during drain");
    expect(await echo.nextJson("echo")).to.deep.equal({ text: "echo during drain" });

    // Progress is logged with the clients and the time left.
    const progress = await inst.waitForLog((r) => r.msg.startsWith("drain progress"));
    expect(progress).to.include({ clients: 4 });
    expect(progress.timeLeftSec).to.be.a("number").within(0, 30);

    // The draining notification came once per client.
    expect(sio.inbox.all((e) => e.event === "notification")).to.have.length(1);

    // When the last client leaves, the process exits 0 by itself, promptly, with nothing left open.
    for (const c of [sio, poll, text, echo]) c.close();
    const left = Date.now();
    const exit = await inst.exited;
    expect(exit).to.deep.equal({ code: 0, signal: null });
    expect(Date.now() - left).to.be.lessThan(1_500);
    expect(inst.logs.map((r) => r.msg)).to.include("drain complete: no clients left");
    expect(inst.logs.map((r) => r.msg)).not.to.include("handles still open after close; exiting");
  });

  it("exits at once when drained with no clients", async () => {
    const inst = await instance(defer);
    inst.signal("SIGINT");
    expect(await inst.exited).to.deep.equal({ code: 0, signal: null });
    expect(inst.logs.map((r) => r.msg)).to.include.members(["drain complete: no clients left", "closed"]);
  });

  it("closes leftovers at FORCED_SHUTDOWN_AFTER_SEC: /ws with 1001, Socket.IO by its transport (so it reconnects)", async () => {
    const inst = await instance(defer, { FORCED_SHUTDOWN_AFTER_SEC: "0.3" });
    const sio = await connectIo(inst.url, { clientId: "stay", reconnection: true });
    const poll = await connectIo(inst.url, { clientId: "stay-poll", transports: ["polling"], reconnection: true });
    const text = await connectWs(`${ws(inst.url)}/ws`);
    defer(() => [sio, poll, text].forEach((c) => c.close()));
    const reasons = [sio, poll].map((c) => new Promise<string>((resolve) => c.socket.once("disconnect", resolve)));
    inst.signal("SIGTERM");
    expect(await text.closed).to.include({ code: 1001 });
    // "transport close", not "io server disconnect": socket.io-client reconnects by itself.
    expect(await Promise.all(reasons)).to.deep.equal(["transport close", "transport close"]);
    expect(sio.socket.active).to.equal(true);
    expect(await inst.exited).to.deep.equal({ code: 0, signal: null });
    expect(inst.logs.find((r) => r.msg.startsWith("forcing shutdown"))).to.include({ reason: "deadline", clients: 3 });
  });

  it("skips the wait on a second signal", async () => {
    const inst = await instance(defer, { FORCED_SHUTDOWN_AFTER_SEC: "1800" });
    const text = await connectWs(`${ws(inst.url)}/ws`);
    const sio = await connectIo(inst.url, { clientId: "x" });
    defer(() => [text, sio].forEach((c) => c.close()));
    inst.signal("SIGTERM");
    await inst.waitForLog((r) => r.msg.startsWith("draining"));
    inst.signal("SIGINT");
    expect(await text.closed).to.include({ code: 1001 });
    expect(await inst.exited).to.deep.equal({ code: 0, signal: null });
    expect(inst.logs.find((r) => r.msg.startsWith("forcing shutdown"))).to.include({ reason: "second signal" });
  });

  it("does no harm when signalled during start-up", async () => {
    const redis = await startRedis();
    defer(() => redis.stop());
    const redisPid = Number(
      (await (await import("node:child_process")).execFileSync("sh", ["-c", `pgrep -f 'redis-server 127.0.0.1:${redis.port}' | head -1`]).toString()).trim(),
    );
    // Redis frozen: start-up waits for it, and the signal arrives meanwhile.
    process.kill(redisPid, "SIGSTOP");
    defer(() => process.kill(redisPid, "SIGCONT"));
    const inst = await startInstance({ env: { PORT: String(await freePort()), INSTANCE_ID: "early", REDIS_URL: redis.url }, waitForListening: false });
    defer(() => inst.stop(500));
    await inst.waitForLog((r) => r.msg === "starting");
    inst.signal("SIGTERM");
    process.kill(redisPid, "SIGCONT");
    expect(await inst.exited).to.deep.equal({ code: 0, signal: null });
    const msgs = inst.logs.map((r) => r.msg);
    expect(msgs).to.include("signal during start-up: not listening");
    expect(msgs).not.to.include("listening");
  });
});
