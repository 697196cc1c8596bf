import { expect } from "chai";
import { createClient } from "redis";
import WebSocket from "ws";
import type { InstanceProcess } from "../harness/instance.js";
import { type Stack, startStack } from "../harness/stack.js";
import { poll } from "../harness/waiting.js";
import { type TestApp, startApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { type Cluster, startCluster, startInstances } from "./helpers/cluster.js";
import { type WsClient, connectIo, connectWs, ioRefusal, wsRefusal } from "./helpers/clients.js";
import { pollingHandshake, pollingReceive, pollingSend } from "./helpers/engine-io.js";
import { httpRequest } from "./helpers/http-request.js";
import { metric, readMetrics } from "./helpers/metrics.js";

const wsBase = (url: string) => url.replace(/^http/, "ws");
type Welcome = { epoch: string; offset: string; recovered: boolean; replayed: number; reason?: string };

/** A raw Engine.IO WebSocket session at `/socket.io/`, every text frame it gets recorded. */
async function engineSocket(
  baseUrl: string,
  opts: { localAddress?: string } = {},
): Promise<{ ws: WebSocket; frames: string[]; next(match: (f: string) => boolean): Promise<string> }> {
  const ws = new WebSocket(`${wsBase(baseUrl)}/socket.io/?EIO=4&transport=websocket`, opts);
  const frames: string[] = [];
  const waiting: { match: (f: string) => boolean; resolve: (f: string) => void }[] = [];
  ws.on("message", (data) => {
    const f = data.toString();
    frames.push(f);
    for (const w of waiting.splice(0))
      if (w.match(f)) w.resolve(f);
      else waiting.push(w);
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return {
    ws,
    frames,
    next: (match) =>
      new Promise((resolve, reject) => {
        const seen = frames.find(match);
        if (seen) return resolve(seen);
        const timer = setTimeout(() => reject(new Error(`no matching frame within 5 s; got ${frames.slice(-3).join(" | ")}`)), 5_000);
        waiting.push({
          match,
          resolve: (f) => {
            clearTimeout(timer);
            resolve(f);
          },
        });
      }),
  };
}

/** Floods a /ws connection until the server closes it; resolves with the close code. */
async function floodUntilCut(c: WsClient): Promise<number> {
  const timer = setInterval(() => {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send("flood");
  }, 5);
  try {
    return (await c.closed).code;
  } finally {
    clearInterval(timer);
  }
}

describe("strangers and faults", function () {
  this.timeout(60_000);
  const defer = useCleanup();

  const app = async (env: Record<string, string> = {}): Promise<TestApp> => {
    const t = await startApp(env);
    defer(() => t.close());
    return t;
  };
  const ws = async (url: string, opts: WebSocket.ClientOptions = {}): Promise<WsClient> => {
    const c = await connectWs(url, opts);
    defer(() => c.close());
    return c;
  };

  describe("through nginx", () => {
    let stack: Stack;
    before(async function () {
      this.timeout(90_000);
      stack = await startStack({
        env: {
          PERIODIC_INTERVAL_SEC: "0",
          FORCED_SHUTDOWN_AFTER_SEC: "5",
          RATE_LIMIT_MESSAGES_PER_SEC: "1",
          RATE_LIMIT_BURST: "1",
          RATE_LIMIT_DISCONNECT_AFTER: "2",
          RATE_LIMIT_PENALTY_SEC: "60",
          // No token: what answers the admin endpoints then is the question.
          ADMIN_TOKEN: "",
        },
      });
    });
    after(async function () {
      this.timeout(60_000);
      await stack?.stop({ graceMs: 5_000 });
    });

    it("a Socket.IO flooder's cut boxes its own address only", async () => {
      const flooder = await connectIo(stack.url, { localAddress: "127.0.0.31", clientId: "sio-flooder" });
      defer(() => flooder.close());
      const gone = new Promise<string>((resolve) => flooder.socket.once("disconnect", resolve));
      const timer = setInterval(() => flooder.socket.emit("message", "flood"), 5);
      defer(() => clearInterval(timer));
      expect(await gone, "the flooder is cut by the server").to.equal("io server disconnect");
      clearInterval(timer);

      // Another address gets in on every transport, though nginx is everyone's peer.
      const other = await connectIo(stack.url, { localAddress: "127.0.0.32", clientId: "sio-neighbour" });
      defer(() => other.close());
      expect((await other.next("welcome")).clientId).to.equal("sio-neighbour");
      const h = await pollingHandshake(stack.url, { localAddress: "127.0.0.32" });
      expect(h.status, `polling handshake from another address: ${h.body}`).to.equal(200);
      expect((await pollingSend(stack.url, h.sid!, "40", { localAddress: "127.0.0.32" })).status).to.equal(200);
      const answer = await pollingReceive(stack.url, h.sid!, { localAddress: "127.0.0.32" });
      expect(answer.body, "the polling session connects to the namespace").to.match(/^40\{"sid"/);
      await pollingSend(stack.url, h.sid!, "1", { localAddress: "127.0.0.32" });
      await ws(`${wsBase(stack.url)}/ws`, { localAddress: "127.0.0.32" });

      // The flooder's own address stays boxed.
      const refused = await ioRefusal(stack.url, { localAddress: "127.0.0.31", clientId: "sio-flooder-again" });
      expect(refused.data?.code, refused.message).to.equal("RATE_LIMITED");
    });

    it("a forged X-Forwarded-For through nginx boxes no victim", async () => {
      const flooder = await ws(`${wsBase(stack.url)}/ws`, { localAddress: "127.0.0.33", headers: { "X-Forwarded-For": "127.0.0.34" } });
      expect(await floodUntilCut(flooder), "close code of the cut").to.equal(1008);
      await ws(`${wsBase(stack.url)}/ws`, { localAddress: "127.0.0.34" });
      const refused = await wsRefusal(`${wsBase(stack.url)}/ws`, { localAddress: "127.0.0.33", headers: { "X-Forwarded-For": "127.0.0.35" } });
      expect(refused.status, refused.body).to.equal(429);
    });

    it("admin endpoints answer no one through nginx without a token", async () => {
      const post = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ message: "from a stranger" }) };
      for (const [path, opts] of [
        ["/broadcast-to-all", post],
        ["/clients", {}],
        ["/history", {}],
      ] as const) {
        const res = await httpRequest(`${stack.url}${path}`, opts);
        expect(res.status, `${path} through nginx: ${res.body}`).to.equal(403);
        expect(JSON.parse(res.body).code).to.equal("ADMIN_DISABLED");
      }
      // A caller on this machine, straight to an instance, is the operator.
      expect((await httpRequest(`${stack.instanceUrl(0)}/clients`)).status).to.equal(200);
      const forwarded = await httpRequest(`${stack.instanceUrl(0)}/clients`, { headers: { "x-forwarded-for": "127.0.0.1" } });
      expect(forwarded.status, "a forwarding header means a proxy in between").to.equal(403);
    });

    it("one polling POST of many CONNECTs makes one socket", async () => {
      const from = { localAddress: "127.0.0.36" };
      const h = await pollingHandshake(stack.url, from);
      expect(h.status, h.body).to.equal(200);
      const index = Number(/^ws(\d)\./.exec(h.sid!)![1]) - 1;
      const before = await readMetrics(stack.instanceUrl(index));
      const connects = Array.from({ length: 300 }, (_, i) => `40${JSON.stringify({ clientId: `multi-${i}` })}`).join("\x1e");
      expect((await pollingSend(stack.url, h.sid!, connects, from)).status).to.equal(200);
      let packets: string[] = [];
      while (packets.filter((p) => p.startsWith("40") || p.startsWith("44")).length < 300) {
        const got = await pollingReceive(stack.url, h.sid!, from);
        packets = [...packets, ...got.body.split("\x1e")];
      }
      expect(
        packets.filter((p) => p.startsWith("40")),
        "CONNECT answers",
      ).to.have.length(1);
      expect(
        packets.filter((p) => p.startsWith("44")).every((p) => p.includes('"BAD_REQUEST"')),
        "the others are refused",
      ).to.equal(true);
      const after = await readMetrics(stack.instanceUrl(index));
      const ids = (m: typeof after) => metric(m, "wbs_client_ids") ?? 0;
      expect(ids(after) - ids(before), "client ids taken by the session").to.equal(1);
      await pollingSend(stack.url, h.sid!, "1", from);
    });
  });

  describe("one instance", () => {
    it("one WebSocket sending 1,000 CONNECTs gets one socket", async () => {
      const t = await app();
      const s = await engineSocket(t.url);
      defer(() => s.ws.terminate());
      await s.next((f) => f.startsWith("0{"));
      const closed = new Promise((resolve) => s.ws.once("close", resolve));
      for (let i = 0; i < 1_000; i++) s.ws.send(`40${JSON.stringify({ clientId: `one-of-many-${i}` })}`);
      // Socket.IO itself closes a session that sends CONNECT to a namespace it is connected to.
      await closed;
      expect(
        s.frames.filter((f) => f.startsWith("40")),
        "CONNECT answers",
      ).to.have.length(1);
      expect(s.frames.filter((f) => f.startsWith("44")).length, "refused while the first was pending").to.be.greaterThan(0);
      expect(
        t.logs.items.filter((r) => r.msg === "connected"),
        "sockets connected",
      ).to.have.length(1);
      await poll(async () => metric(await readMetrics(t.url), "wbs_client_ids") === 0, { timeoutMs: 3_000, what: "its client id given back" });
    });

    it("bare handshakes stop holding slots after CONNECT_TIMEOUT_SEC", async () => {
      const t = await app({ MAX_CONNECTIONS: "3", CONNECT_TIMEOUT_SEC: "0.3" });
      for (let i = 0; i < 3; i++) expect((await pollingHandshake(t.url)).status).to.equal(200);
      expect((await pollingHandshake(t.url)).status, "full while they are open").to.equal(503);
      expect(metric(await readMetrics(t.url), "wbs_pending_sessions")).to.equal(3);
      await poll(async () => metric(await readMetrics(t.url), "wbs_pending_sessions") === 0, { timeoutMs: 5_000, what: "the bare sessions closed" });
      const c = await connectIo(t.url, { clientId: "after-the-stale-ones" });
      defer(() => c.close());
      expect((await c.next("welcome")).clientId).to.equal("after-the-stale-ones");
    });

    it("an oversized auth is refused with BAD_REQUEST", async () => {
      const t = await app();
      const huge = await ioRefusal(t.url, { auth: { clientId: "big", padding: "x".repeat(120_000) } });
      expect(huge.data?.code, huge.message).to.equal("BAD_REQUEST");
      const token = await ioRefusal(t.url, { auth: { token: "t".repeat(9_000) } });
      expect(token.data?.code, token.message).to.equal("BAD_REQUEST");
      const rooms = await ioRefusal(t.url, { auth: { rooms: Array.from({ length: 101 }, (_, i) => `r${i}`) } });
      expect(rooms.data?.code, rooms.message).to.equal("BAD_REQUEST");
      const fine = await connectIo(t.url, { auth: { clientId: "small", rooms: ["a", "b"] } });
      defer(() => fine.close());
      expect((await fine.next("welcome")).clientId).to.equal("small");
    });

    it("a future offset is refused, not waited for", async () => {
      const t = await app();
      const first = await ws(`${t.wsUrl}/ws?format=json`);
      const { epoch } = await first.nextJson<Welcome>("welcome");
      const future = "9999999999999-0";
      const line = await ws(`${t.wsUrl}/ws?format=json&since=${future}&epoch=${epoch}`);
      expect(await line.nextJson<Welcome>("welcome")).to.include({ recovered: false, replayed: 0, reason: "FUTURE_OFFSET" });
      const sio = await connectIo(t.url, { auth: { epoch, offset: future } });
      defer(() => sio.close());
      expect(await sio.next<Welcome>("welcome")).to.include({ recovered: false, reason: "FUTURE_OFFSET" });
      await fetch(`${t.url}/broadcast-to-all`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: "live after all" }),
      });
      await line.nextJson("message", (m: { text: string }) => m.text === "live after all");
      await sio.next("message", (m: { text: string }) => m.text === "live after all");
    });

    it("/history pages forward from since, oldest first", async () => {
      const t = await app();
      const offsets: string[] = [];
      for (let i = 0; i < 8; i++) {
        await fetch(`${t.url}/broadcast-to-all`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ message: `h${i}` }),
        });
      }
      const all = (await (await fetch(`${t.url}/history?limit=100`)).json()) as { entries: { data: { text: string; offset: string } }[] };
      for (const e of all.entries) offsets.push(e.data.offset);
      const page = async (since: string) =>
        (await (await fetch(`${t.url}/history?since=${since}&limit=3`)).json()) as { complete: boolean; entries: { data: { text: string; offset: string } }[] };
      const p1 = await page(offsets[0]!);
      expect(p1.entries.map((e) => e.data.text)).to.deep.equal(["h1", "h2", "h3"]);
      expect(p1.complete, "more remain").to.equal(false);
      const p2 = await page(p1.entries[2]!.data.offset);
      expect(p2.entries.map((e) => e.data.text)).to.deep.equal(["h4", "h5", "h6"]);
      const p3 = await page(p2.entries[2]!.data.offset);
      expect(p3.entries.map((e) => e.data.text)).to.deep.equal(["h7"]);
      expect(p3.complete, "the last page").to.equal(true);
    });

    it("a direct forged X-Forwarded-For is ignored", async () => {
      const t = await app({
        TRUST_PROXY: "127.0.0.1",
        RATE_LIMIT_MESSAGES_PER_SEC: "1",
        RATE_LIMIT_BURST: "1",
        RATE_LIMIT_DISCONNECT_AFTER: "2",
        RATE_LIMIT_PENALTY_SEC: "60",
      });
      const flooder = await ws(`${t.wsUrl}/ws`, { localAddress: "127.0.0.37", headers: { "X-Forwarded-For": "10.9.9.9" } });
      expect(await floodUntilCut(flooder)).to.equal(1008);
      for (const forged of ["10.8.8.8", "1.2.3.4, 5.6.7.8", "x".repeat(200)]) {
        const again = await wsRefusal(`${t.wsUrl}/ws`, { localAddress: "127.0.0.37", headers: { "X-Forwarded-For": forged } });
        expect(again.status, `dodging with X-Forwarded-For ${forged.slice(0, 20)}: ${again.body}`).to.equal(429);
      }
      // Naming the flooder's address from elsewhere proves nothing either way.
      await ws(`${t.wsUrl}/ws`, { localAddress: "127.0.0.38", headers: { "X-Forwarded-For": "127.0.0.37" } });
    });

    it("publishing is bounded per address", async () => {
      // No cut here (RATE_LIMIT_DISCONNECT_AFTER=0): every refusal is answered.
      const t = await app({
        ADDRESS_RATE_LIMIT_MESSAGES_PER_SEC: "5",
        ADDRESS_RATE_LIMIT_BYTES_PER_SEC: "0",
        INSTANCE_RATE_LIMIT_MESSAGES_PER_SEC: "0",
        RATE_LIMIT_DISCONNECT_AFTER: "0",
      });
      const crowd = await Promise.all(Array.from({ length: 5 }, () => ws(`${t.wsUrl}/ws`, { localAddress: "127.0.0.39" })));
      for (const c of crowd) await c.next(); // welcome
      const started = performance.now();
      // Each under its own bucket (burst 10): fifty in all from one address.
      for (const c of crowd) for (let i = 0; i < 10; i++) c.ws.send(`crowd ${i}`);
      const counted = async () => {
        const m = await readMetrics(t.url);
        return {
          accepted: metric(m, 'wbs_broadcasts_total{origin="ws"}') ?? 0,
          refused: metric(m, 'wbs_publish_limited_total{transport="ws",scope="address"}') ?? 0,
        };
      };
      await poll(
        async () => {
          const n = await counted();
          return n.accepted + n.refused === 50;
        },
        { timeoutMs: 5_000, what: "all fifty answered" },
      );
      const elapsedSec = (performance.now() - started) / 1000;
      const { accepted, refused } = await counted();
      expect(accepted, `accepted from one address in ${elapsedSec.toFixed(2)} s`).to.be.at.most(10 + Math.ceil(5 * elapsedSec) + 1);
      const errors = () => crowd.flatMap((c) => c.inbox.all((l) => l.startsWith("Error")));
      await poll(() => errors().length === refused, { timeoutMs: 5_000, what: "every refusal answered" });
      for (const r of errors()) expect(r).to.match(/^Error: rate limited: at most 5 messages a second from one address/);
      // Another address is served meanwhile.
      const observer = await ws(`${t.wsUrl}/ws`, { localAddress: "127.0.0.40" });
      await observer.next();
      observer.ws.send("sentinel from elsewhere");
      await observer.next((l) => l.endsWith("says: sentinel from elsewhere"));
    });

    it("an address that keeps sending while refused is cut and boxed", async () => {
      const t = await app({
        ADDRESS_RATE_LIMIT_MESSAGES_PER_SEC: "5",
        ADDRESS_RATE_LIMIT_BYTES_PER_SEC: "0",
        INSTANCE_RATE_LIMIT_MESSAGES_PER_SEC: "0",
        RATE_LIMIT_DISCONNECT_AFTER: "5",
        RATE_LIMIT_PENALTY_SEC: "60",
      });
      const bystander = await ws(`${t.wsUrl}/ws`, { localAddress: "127.0.0.42" });
      await bystander.next();
      // Five connections from one address, each under its own limit (burst 10).
      const crowd = await Promise.all(Array.from({ length: 5 }, () => ws(`${t.wsUrl}/ws`, { localAddress: "127.0.0.41" })));
      for (const c of crowd) await c.next();
      for (const c of crowd) for (let i = 0; i < 8; i++) c.ws.send(`crowd ${i}`);
      // The first ones took the address's burst; the last kept sending while refused.
      const { code } = await crowd[4]!.closed;
      expect(code, "the last connection's close").to.equal(1008);
      const again = await wsRefusal(`${t.wsUrl}/ws`, { localAddress: "127.0.0.41" });
      expect(again.status, `a new session from the boxed address: ${again.body}`).to.equal(429);
      const m = await readMetrics(t.url);
      expect(metric(m, 'wbs_rate_limit_disconnects_total{transport="ws"}'), "cuts counted").to.be.greaterThan(0);
      // The bystander, on another address, is served on.
      bystander.ws.send("sentinel from elsewhere");
      await bystander.next((l) => l.endsWith("says: sentinel from elsewhere"));
    });

    it("honest senders are not cut after a stall", async () => {
      const [inst] = (await startInstances(1, { RATE_LIMIT_MESSAGES_PER_SEC: "20", RATE_LIMIT_BURST: "10", RATE_LIMIT_DISCONNECT_AFTER: "5" })) as [
        InstanceProcess,
      ];
      defer(() => inst.stop(1_000));
      const line = await ws(`${wsBase(inst.url)}/ws/honest`);
      await line.next();
      let sent = 0;
      const timer = setInterval(() => line.ws.send(`n${sent++}`), 1000 / 19);
      defer(() => clearInterval(timer));
      await line.next((l) => l === "Server echo: n10");
      // The instance stops for 1.5 s while the client keeps its pace.
      inst.signal("SIGSTOP");
      defer(() => inst.signal("SIGCONT"));
      const stoppedAt = sent;
      await poll(() => sent >= stoppedAt + 28, { timeoutMs: 5_000, what: "28 frames sent while stopped" });
      inst.signal("SIGCONT");
      await poll(() => sent >= stoppedAt + 45, { timeoutMs: 5_000, what: "more frames after" });
      clearInterval(timer);
      line.ws.send("last");
      await line.next((l) => l === "Server echo: last" || l.startsWith("Error"), 5_000);
      expect(
        line.inbox.all((l) => l.startsWith("Error")),
        "refusals of an honest sender",
      ).to.deep.equal([]);
      expect(line.ws.readyState, "still open").to.equal(WebSocket.OPEN);
    });
  });

  describe("with Redis", () => {
    let cluster: Cluster;
    let oldest: { epoch: string; offset: string };
    const text = "x".repeat(64 * 1024);
    before(async function () {
      this.timeout(120_000);
      cluster = await startCluster(1, { HISTORY_SIZE: "1000", MAX_MESSAGE_BYTES: "65536", HISTORY_TTL_SEC: "0" });
      const url = cluster.instances[0]!.url;
      const watcher = await connectWs(`${wsBase(url)}/ws?format=json`);
      const { epoch } = await watcher.nextJson<Welcome>("welcome");
      const body = JSON.stringify({ message: text });
      for (let i = 0; i < 1_000; i += 20) {
        await Promise.all(
          Array.from({ length: 20 }, () => fetch(`${url}/broadcast-to-all`, { method: "POST", headers: { "content-type": "application/json" }, body })),
        );
      }
      const first = await watcher.nextJson<{ offset: string }>("message");
      oldest = { epoch, offset: first.offset };
      watcher.close();
    });
    after(async function () {
      this.timeout(30_000);
      await cluster?.stop();
    });

    /** The slowest command Redis ran while `work` ran, from its SLOWLOG, microseconds. */
    const slowestDuring = async (work: () => Promise<void>): Promise<{ micros: number; command: string }> => {
      const redis = createClient({ url: cluster.redis.url });
      await redis.connect();
      defer(() => redis.destroy());
      await redis.sendCommand(["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
      await redis.sendCommand(["CONFIG", "SET", "slowlog-max-len", "100000"]);
      await redis.sendCommand(["SLOWLOG", "RESET"]);
      await work();
      const log = (await redis.sendCommand(["SLOWLOG", "GET", "100000"])) as [number, number, number, string[]][];
      const slowest = log.reduce((a, e) => (e[2] > a[2] ? e : a), [0, 0, 0, [""]] as (typeof log)[number]);
      return { micros: Number(slowest[2]), command: slowest[3].slice(0, 2).join(" ") };
    };

    it("a replay of 1,000 × 64 KB holds Redis under 50 ms a command", async () => {
      const url = cluster.instances[0]!.url;
      let welcome: Welcome | undefined;
      const slowest = await slowestDuring(async () => {
        const line = await ws(`${wsBase(url)}/ws?format=json&since=${oldest.offset}&epoch=${oldest.epoch}`);
        welcome = await line.nextJson<Welcome>("welcome");
        for (let i = 0; i < welcome.replayed; i++) await line.nextJson("message");
      });
      console.log(
        `      slowest Redis command during the replay: ${(slowest.micros / 1000).toFixed(2)} ms (${slowest.command}); replayed ${welcome?.replayed}`,
      );
      expect(slowest.micros, `slowest command ${slowest.command}`).to.be.below(50_000);
      expect(welcome).to.include({ recovered: false, reason: "TOO_LARGE" });
      // The default budget (2 MiB) carries the newest 31 entries of 64 KiB.
      expect(welcome!.replayed).to.be.within(25, 32);
    });

    it("a replay larger than MAX_BUFFERED_BYTES is paced, not cut", async () => {
      const [inst] = await startInstances(1, {
        REDIS_URL: cluster.redis.url,
        HISTORY_SIZE: "1000",
        REPLAY_MAX_BYTES: String(128 * 1024 * 1024),
        MAX_BUFFERED_BYTES: String(4 * 1024 * 1024),
      });
      defer(() => inst!.stop(1_000));
      const line = await ws(`${wsBase(inst!.url)}/ws?format=json&since=${oldest.offset}&epoch=${oldest.epoch}`);
      const welcome = await line.nextJson<Welcome>("welcome", () => true, 10_000);
      expect(welcome).to.include({ recovered: true });
      expect(welcome.replayed).to.be.at.least(990);
      for (let i = 0; i < welcome.replayed; i++) await line.nextJson("message", () => true, 10_000);
      expect(metric(await readMetrics(inst!.url), 'wbs_slow_clients_cut_total{transport="ws"}') ?? 0, "slow cuts").to.equal(0);
    });
  });

  describe("a Redis blip", () => {
    it("CLIENT KILL during nonstop publishing loses nothing live", async () => {
      const c = await startCluster(2, { RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      defer(() => c.stop());
      const [ws1, ws2] = c.instances as [InstanceProcess, InstanceProcess];
      const receiver = await ws(`${wsBase(ws2.url)}/ws?format=json`);
      await receiver.nextJson("welcome");
      const redis = createClient({ url: c.redis.url });
      await redis.connect();
      defer(() => redis.destroy());
      const total = 300;
      const kills: Record<number, string[]> = {
        50: ["CLIENT", "KILL", "TYPE", "pubsub"],
        120: ["CLIENT", "KILL", "TYPE", "pubsub"],
        190: ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        240: ["CLIENT", "KILL", "TYPE", "pubsub"],
      };
      for (let i = 0; i < total; i++) {
        const kill = kills[i];
        if (kill) await redis.sendCommand(kill);
        const res = await fetch(`${ws1.url}/broadcast-to-all`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ message: `n${i}` }),
        });
        expect(res.status, `publish n${i}`).to.equal(200);
      }
      await receiver.nextJson("message", (m: { text: string }) => m.text === `n${total - 1}`, 15_000);
      const got = receiver.inbox.all((f) => f.includes('"type":"message"')).map((f) => (JSON.parse(f) as { data: { text: string } }).data.text);
      expect(got, "every message once, in order").to.deep.equal(Array.from({ length: total }, (_, i) => `n${i}`));
      for (const inst of c.instances) {
        expect(
          inst.logs.filter((r) => r.msg === "unhandled rejection"),
          `${inst.id}: unhandled rejections`,
        ).to.deep.equal([]);
      }
    });
  });
});
