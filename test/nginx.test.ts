import { expect } from "chai";
import { type Stack, startStack } from "../harness/stack.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type IoClient } from "./helpers/clients.js";

const wsUrl = (url: string) => url.replace(/^http/, "ws");

describe("four instances behind nginx (the shipped nginx.conf)", function () {
  this.timeout(60_000);
  const defer = useCleanup();
  let stack: Stack;

  before(async function () {
    this.timeout(60_000);
    stack = await startStack({ env: { PERIODIC_INTERVAL_SEC: "0", FORCED_SHUTDOWN_AFTER_SEC: "30" } });
  });
  after(async function () {
    this.timeout(60_000);
    await stack?.stop({ graceMs: 5_000 });
  });

  const connectMany = async (n: number, opts: Parameters<typeof connectIo>[1] = {}): Promise<IoClient[]> => {
    const clients = await Promise.all(Array.from({ length: n }, () => connectIo(stack.url, opts)));
    defer(() => clients.forEach((c) => c.close()));
    return clients;
  };

  const instanceOf = async (c: IoClient): Promise<string> => (await c.next("welcome")).instance;

  it("spreads 100 clients from one IP over all four instances, and a broadcast reaches every one", async () => {
    const clients = await connectMany(100, { transports: ["polling", "websocket"] });
    const perInstance: Record<string, number> = {};
    for (const c of clients) {
      const id = await instanceOf(c);
      perInstance[id] = (perInstance[id] ?? 0) + 1;
      // Sticky: the session id names the instance that welcomed it.
      expect(c.socket.io.engine.id.startsWith(`${id}.`)).to.equal(true);
    }
    console.log(`      connections per instance: ${JSON.stringify(perInstance)}`);
    expect(Object.keys(perInstance).sort()).to.deep.equal(["ws1", "ws2", "ws3", "ws4"]);
    for (const n of Object.values(perInstance)) expect(n).to.be.within(10, 40);

    const started = performance.now();
    const res = await fetch(`${stack.url}/broadcast-to-all`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${stack.adminToken}` },
      body: '{"message":"to all 100"}',
    });
    expect(await res.json()).to.deep.equal({ sent: 100, partial: false });
    await Promise.all(clients.map((c) => c.next("message", (m: { text: string }) => m.text === "to all 100")));
    console.log(`      broadcast to 100 clients through nginx: all received after ${(performance.now() - started).toFixed(1)} ms`);
    const list = await (await fetch(`${stack.url}/clients`, { headers: { authorization: `Bearer ${stack.adminToken}` } })).json();
    expect(list.clients).to.have.length(100);
    expect(list.partial).to.equal(false);
  });

  it("keeps long-polling sessions on their owner: polling-only clients exchange messages across instances", async () => {
    const clients = await connectMany(12, { transports: ["polling"] });
    const instances = new Set(await Promise.all(clients.map(instanceOf)));
    expect(instances.size).to.be.greaterThan(1);
    // Several polls per session: each must reach the owner (an unknown sid would disconnect it).
    for (let i = 0; i < 3; i++) {
      await clients[i]!.socket.emitWithAck("message", `poll ${i}`);
      await Promise.all(clients.map((c) => c.next("message", (m: { text: string }) => m.text === `poll ${i}`)));
    }
    for (const c of clients) {
      expect(c.socket.connected).to.equal(true);
      expect(c.socket.io.engine.transport.name).to.equal("polling");
    }
  });

  it("upgrades polling sessions to WebSocket through nginx, and serves WebSocket-only clients", async () => {
    const upgraded = await connectMany(8, { transports: ["polling", "websocket"] });
    await Promise.all(
      upgraded.map((c) => (c.socket.io.engine.transport.name === "websocket" ? undefined : new Promise((r) => c.socket.io.engine.once("upgrade", r)))),
    );
    const wsOnly = await connectMany(8, { transports: ["websocket"] });
    const all = [...upgraded, ...wsOnly];
    await wsOnly[0]!.socket.emitWithAck("message", "over websockets");
    await Promise.all(all.map((c) => c.next("message", (m: { text: string }) => m.text === "over websockets")));
    for (const c of all) expect(c.socket.io.engine.transport.name).to.equal("websocket");
  });

  it("joins a room on one instance and receives messages sent on another", async () => {
    const clients = await connectMany(8);
    const byInstance = new Map<string, IoClient>();
    for (const c of clients) byInstance.set(await instanceOf(c), c);
    expect(byInstance.size).to.be.at.least(2);
    const [memberInst, senderInst] = [...byInstance.keys()];
    const member = byInstance.get(memberInst!)!;
    const sender = byInstance.get(senderInst!)!;
    await member.socket.emitWithAck("join", "nginx-room");
    await sender.socket.emitWithAck("message", { text: "room across instances", room: "nginx-room" });
    expect(await member.next("message", (m: { text: string }) => m.text === "room across instances")).to.include({ room: "nginx-room", instance: senderInst });
  });

  it("carries /ws, /ws/{clientId}, Socket.IO and HTTP broadcasts through nginx, all seeing each other", async () => {
    const [sio] = await connectMany(1);
    const line = await connectWs(`${wsUrl(stack.url)}/ws`);
    const echo = await connectWs(`${wsUrl(stack.url)}/ws/nginx-echo`);
    defer(() => [line, echo].forEach((c) => c.close()));
    expect(await line.next()).to.match(/Welcome! Connected to Instance \[ws\d\]/);
    line.ws.send("hello from websocat");
    expect(await sio!.next("message", (m: { text: string }) => m.text === "hello from websocat")).to.include({ origin: "ws" });
    await sio!.socket.emitWithAck("message", "hello from socket.io");
    expect(await line.next((l) => l.includes("hello from socket.io"))).to.match(/^User \S+ \(via ws\d\) says: hello from socket\.io$/);
    await echo.next();
    echo.ws.send("echo me");
    expect(await echo.next((l) => l.startsWith("Server echo"))).to.equal("Server echo: echo me");
    await fetch(`${stack.url}/broadcast-to-all`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${stack.adminToken}` },
      body: '{"message":"from curl"}',
    });
    expect(await line.next((l) => l === "from curl")).to.equal("from curl");
    expect(await echo.next((l) => l === "from curl")).to.equal("from curl");
    expect(await sio!.next("message", (m: { text: string }) => m.text === "from curl")).to.include({ origin: "http" });
    // A duplicate id through nginx is refused whichever instance the second one lands on.
    const dup = await connectWs(`${wsUrl(stack.url)}/ws/nginx-echo`);
    defer(() => dup.close());
    expect(JSON.parse(await dup.next())).to.deep.equal({ type: "error", code: 1008, message: "Client nginx-echo is already connected" });
    const page = await fetch(`${stack.url}/`);
    expect(page.status).to.equal(200);
    expect(await page.text()).to.match(/<html/i);
  });

  // Last: it drains ws1, then has the stack start its replacement.
  it("sends new sessions and /ws upgrades past a draining instance, while its clients keep working", async () => {
    const clients = await connectMany(8);
    let onWs1: IoClient | undefined;
    let elsewhere: IoClient | undefined;
    for (const c of clients) {
      const id = await instanceOf(c);
      if (id === "ws1") onWs1 ??= c;
      else elsewhere ??= c;
    }
    expect(onWs1, "no client landed on ws1").to.not.equal(undefined);
    const ws1 = stack.instances[0]!;
    ws1.signal("SIGTERM");
    await onWs1!.next("notification", (n: { type: string }) => n.type === "draining");
    expect((await fetch(`${stack.instanceUrl(0)}/readyz`)).status).to.equal(503);

    // New sessions of every kind, through nginx: none fails, none lands on ws1.
    const fresh = [
      ...(await connectMany(6, { transports: ["polling"] })),
      ...(await connectMany(6, { transports: ["websocket"] })),
      ...(await connectMany(6, { transports: ["polling", "websocket"] })),
    ];
    for (const c of fresh) expect(await instanceOf(c)).to.not.equal("ws1");
    for (let i = 0; i < 6; i++) {
      const line = await connectWs(`${wsUrl(stack.url)}/ws`);
      defer(() => line.close());
      expect(await line.next()).to.match(/Connected to Instance \[ws[234]\]/);
    }

    // The draining instance's client still sends and receives, across instances.
    await elsewhere!.socket.emitWithAck("message", "to the drained one");
    expect((await onWs1!.next("message", (m: { text: string }) => m.text === "to the drained one")).instance).to.not.equal("ws1");
    await onWs1!.socket.emitWithAck("message", "from the drained one");
    expect(await elsewhere!.next("message", (m: { text: string }) => m.text === "from the drained one")).to.include({ instance: "ws1" });

    // When its clients leave, ws1 exits 0; the stack starts a replacement.
    for (const c of clients) if (c.inbox.all((e) => e.event === "welcome" && (e.args[0] as { instance: string }).instance === "ws1").length > 0) c.close();
    expect(await ws1.exited).to.deep.equal({ code: 0, signal: null });
    await stack.restartInstance(0);
    expect(stack.instances[0]!.pid).to.not.equal(ws1.pid);
  });
});
