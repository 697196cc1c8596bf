import { expect } from "chai";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, ioRefusal, type IoClient } from "./helpers/clients.js";
import { type Cluster, startCluster, startClusterOnRedisCluster } from "./helpers/cluster.js";

const ws = (url: string) => url.replace(/^http/, "ws");
const broadcast = (url: string, body: object) =>
  fetch(`${url}/broadcast-to-all`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then(async (r) => ({
    status: r.status,
    body: (await r.json()) as any,
  }));

/** Connects a Socket.IO client to instance i of the current cluster, closed after the test. */
const ioOn =
  (defer: (task: () => unknown) => void, cluster: () => Cluster<unknown>) =>
  async (i: number, opts: Parameters<typeof connectIo>[1] = {}): Promise<IoClient> => {
    const client = await connectIo(cluster().instances[i]!.url, opts);
    defer(() => client.close());
    return client;
  };

// The same behaviour on one Redis (classic pub/sub) and on a Redis Cluster
// (sharded pub/sub, keys spread over three masters).
const BACKENDS: { name: string; start: (n: number) => Promise<Cluster<{ stop(): Promise<unknown> }>> }[] = [
  { name: "one Redis", start: (n) => startCluster(n) },
  { name: "a Redis Cluster (3 masters, 3 replicas, sharded pub/sub)", start: (n) => startClusterOnRedisCluster(n) },
];

for (const backend of BACKENDS) {
  describe(`cluster: instances sharing one broadcast domain over ${backend.name}`, function () {
    this.timeout(30_000);
    const defer = useCleanup();
    let c: Cluster<{ stop(): Promise<unknown> }>;

    beforeEach(async () => {
      c = await backend.start(3);
      defer(() => c.stop());
    });

    const io = ioOn(defer, () => c);

    it("delivers a message sent on one instance to every connection on every instance exactly once", async () => {
      const clients = [await io(0, { clientId: "a" }), await io(1, { clientId: "b", transports: ["polling"] }), await io(2, { clientId: "c" })];
      const line = await connectWs(`${ws(c.instances[2]!.url)}/ws`);
      defer(() => line.close());
      await clients[1]!.socket.emitWithAck("message", "one");
      await clients[1]!.socket.emitWithAck("message", "sentinel");
      for (const client of clients) {
        expect(await client.next("message", (m: { text: string }) => m.text === "sentinel")).to.include({ from: "b", instance: "ws2" });
        expect(client.inbox.all((e) => e.event === "message").map((e) => (e.args[0] as { text: string }).text)).to.deep.equal(["one", "sentinel"]);
      }
      expect(await line.next((l) => l.includes("sentinel"))).to.equal("User b (via ws2) says: sentinel");
      expect(line.inbox.all((l) => l.startsWith("User"))).to.have.length(2);
    });

    it("lets /ws, Socket.IO and HTTP broadcasts on different instances see each other", async () => {
      const sio = await io(0, { clientId: "sio" });
      const line = await connectWs(`${ws(c.instances[1]!.url)}/ws?format=json`);
      defer(() => line.close());
      const lineId = (await line.nextJson("welcome")).clientId;
      line.ws.send("from ws on ws2");
      expect(await sio.next("message")).to.include({ text: "from ws on ws2", from: lineId, instance: "ws2", origin: "ws" });
      await sio.socket.emitWithAck("message", "from sio on ws1");
      expect(await line.nextJson("message", (m: { text: string }) => m.text === "from sio on ws1")).to.include({ instance: "ws1" });
      const res = await broadcast(c.instances[2]!.url, { message: "http on ws3" });
      expect(res.body).to.deep.equal({ sent: 2, partial: false });
      expect(await sio.next("message", (m: { text: string }) => m.text === "http on ws3")).to.include({ instance: "ws3", origin: "http" });
      expect(await line.nextJson("message", (m: { text: string }) => m.text === "http on ws3")).to.include({ origin: "http" });
    });

    it("delivers a room joined on one instance to messages sent on another, and only to members", async () => {
      const member1 = await io(0, { clientId: "m1" });
      const member2 = await io(2, { clientId: "m2" });
      const outsider = await io(1, { clientId: "out" });
      await member1.socket.emitWithAck("join", "ops");
      await member2.socket.emitWithAck("join", "ops");
      await outsider.socket.emitWithAck("message", { text: "ops only", room: "ops" });
      for (const m of [member1, member2]) expect(await m.next("message")).to.include({ text: "ops only", room: "ops", instance: "ws2" });
      const res = await broadcast(c.instances[1]!.url, { message: "http to ops", room: "ops" });
      expect(res.body).to.deep.equal({ sent: 2, partial: false });
      await outsider.socket.emitWithAck("message", "sentinel");
      expect((await outsider.next("message")).text).to.equal("sentinel");
      expect(outsider.inbox.all((e) => e.event === "message")).to.have.length(1);
    });

    it("counts and lists the connections of all instances", async () => {
      await io(0, { clientId: "x1" });
      await io(1, { clientId: "x2" });
      const e = await connectWs(`${ws(c.instances[2]!.url)}/ws/x3`);
      defer(() => e.close());
      await e.next();
      const list = await (await fetch(`${c.instances[0]!.url}/clients`)).json();
      expect(list.partial).to.equal(false);
      expect([...list.clients].sort()).to.deep.equal(["x1", "x2", "x3"]);
      expect((await broadcast(c.instances[1]!.url, { message: "count me" })).body).to.deep.equal({ sent: 3, partial: false });
    });

    it("lists every live instance in the status notification", async () => {
      const a = await io(0, { clientId: "a" });
      await io(1, { clientId: "b" });
      await a.socket.emitWithAck("status");
      const n = await a.next("notification");
      expect(n).to.include({ type: "status", requestedBy: "a", clients: 2, partial: false });
      expect(n.instances).to.deep.equal([
        { id: "ws1", clients: 1, draining: false },
        { id: "ws2", clients: 1, draining: false },
        { id: "ws3", clients: 0, draining: false },
      ]);
    });

    it("keeps a clientId unique across instances: of racing clients exactly one wins", async () => {
      for (let round = 0; round < 5; round++) {
        const id = `racer-${round}`;
        const attempts = c.instances.map((inst) =>
          connectIo(inst.url, { clientId: id }).then(
            (client) => {
              defer(() => client.close());
              return "won";
            },
            (err: Error & { data?: { code: string } }) => err.data?.code ?? err.message,
          ),
        );
        const results = await Promise.all(attempts);
        expect(
          results.filter((r) => r === "won"),
          JSON.stringify(results),
        ).to.have.length(1);
        expect(results.filter((r) => r === "DUPLICATE_CLIENT_ID")).to.have.length(2);
      }
      // /ws/{id} sees Socket.IO's ids too.
      const dup = await connectWs(`${ws(c.instances[1]!.url)}/ws/racer-0`);
      defer(() => dup.close());
      expect(JSON.parse(await dup.next())).to.deep.equal({ type: "error", code: 1008, message: "Client racer-0 is already connected" });
    });

    it("frees the ids of an instance that crashed within a few seconds", async () => {
      await connectIo(c.instances[0]!.url, { clientId: "orphan" });
      expect((await ioRefusal(c.instances[1]!.url, { clientId: "orphan" })).data).to.deep.equal({ code: "DUPLICATE_CLIENT_ID" });
      c.instances[0]!.signal("SIGKILL");
      await c.instances[0]!.exited;
      const crashed = Date.now();
      // Poll (bounded) until the id is free on a live instance.
      let client: IoClient | undefined;
      while (!client && Date.now() - crashed < 10_000) {
        client = await connectIo(c.instances[1]!.url, { clientId: "orphan" }).catch(() => undefined);
        if (!client) await new Promise((r) => setTimeout(r, 200));
      }
      expect(client, "id still held 10 s after the crash").to.not.equal(undefined);
      defer(() => client!.close());
      expect(Date.now() - crashed).to.be.lessThan(8_000);
    });

    it("answers cluster queries within about a second, marked partial, when an instance does not answer", async () => {
      await io(0, { clientId: "alive" });
      await io(2, { clientId: "frozen-one" });
      process.kill(c.instances[2]!.pid, "SIGSTOP");
      defer(() => process.kill(c.instances[2]!.pid, "SIGCONT"));
      const started = Date.now();
      const list = await (await fetch(`${c.instances[0]!.url}/clients`)).json();
      expect(Date.now() - started).to.be.lessThan(2_500);
      expect(list.partial).to.equal(true);
      expect(list.clients).to.include("alive");
      const sent = await broadcast(c.instances[1]!.url, { message: "partial" });
      expect(sent.body).to.include({ partial: true });
      expect(sent.body.sent).to.be.at.least(1);
    });
  });
}

describe("cluster: one Redis, its outages and per-instance timers", function () {
  this.timeout(30_000);
  const defer = useCleanup();
  let c: Cluster;

  beforeEach(async () => {
    c = await startCluster(3);
    defer(() => c.stop());
  });

  const io = ioOn(defer, () => c);

  it("sends each client one periodic notification per interval, however many instances run", async () => {
    await c.stop();
    c = await startCluster(3, { PERIODIC_INTERVAL_SEC: "0.25" });
    defer(() => c.stop());
    const clients = [await io(0, { clientId: "p1" }), await io(1, { clientId: "p2" }), await io(2, { clientId: "p3" })];
    for (const client of clients) {
      const ticks: number[] = [];
      for (let i = 0; i < 3; i++) ticks.push(Date.parse((await client.next("notification", (n: { type: string }) => n.type === "periodic")).at));
      for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).to.be.greaterThan(180);
    }
  });

  it("survives a Redis restart: keeps serving its own clients, and cross-instance delivery resumes", async () => {
    const a = await io(0, { clientId: "a" });
    const b = await io(1, { clientId: "b" });
    await c.redis.stop();
    await c.instances[0]!.waitForLog((r) => r.msg.startsWith("redis unreachable"));
    // During the outage: local delivery still works, nothing crashes.
    await a.socket.emitWithAck("message", "local during outage");
    expect((await a.next("message")).text).to.equal("local during outage");
    const during = await (await fetch(`${c.instances[0]!.url}/clients`)).json();
    expect(during).to.deep.include({ partial: true });
    await c.redis.restart();
    await Promise.all(
      c.instances.flatMap((inst) => ["pub", "sub"].map((role) => inst.waitForLog((r) => r.msg.startsWith("redis is back") && r.role === role, 15_000))),
    );
    // Subscriptions are restored: a message on ws1 reaches ws2 again, and ws2 to ws1.
    await a.socket.emitWithAck("message", "after restart from a");
    expect((await b.next("message", (m: { text: string }) => m.text === "after restart from a")).instance).to.equal("ws1");
    await b.socket.emitWithAck("message", "after restart from b");
    expect((await a.next("message", (m: { text: string }) => m.text === "after restart from b")).instance).to.equal("ws2");
    // The outage message never reached b (it was local only), and nothing arrived twice.
    await b.next("message", (m: { text: string }) => m.text === "after restart from b");
    expect(b.inbox.all((e) => e.event === "message").map((e) => (e.args[0] as { text: string }).text)).to.deep.equal([
      "after restart from a",
      "after restart from b",
    ]);
    // The id registry is restored by the heartbeat: "a" is still taken cluster-wide.
    let refusal: string | undefined;
    for (let i = 0; i < 30 && refusal !== "DUPLICATE_CLIENT_ID"; i++) {
      refusal = await connectIo(c.instances[2]!.url, { clientId: "a" }).then(
        (cl) => {
          cl.close();
          return "accepted";
        },
        (err: Error & { data?: { code: string } }) => err.data?.code,
      );
      if (refusal !== "DUPLICATE_CLIENT_ID") await new Promise((r) => setTimeout(r, 200));
    }
    expect(refusal).to.equal("DUPLICATE_CLIENT_ID");
    for (const inst of c.instances) expect(inst.otherOutput.join("\n")).not.to.match(/Error|unhandled/i);
  });
});
