import { expect } from "chai";
import { ConfigError, loadConfig } from "../server/config.js";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { startCluster } from "./helpers/cluster.js";
import { connectIo, connectWs, type IoClient, ioRefusal, type WsClient, wsRefusal } from "./helpers/clients.js";
import { pollingHandshake, pollingSend } from "./helpers/engine-io.js";
import { metric, readMetrics } from "./helpers/metrics.js";

type Ack = { ok: boolean; code?: string; error?: string; room?: string };
type Message = { text: string; from: string };
type Notification = { type: string; requestedBy?: string };

const isStatus = (e: { event: string; args: unknown[] }) => e.event === "notification" && (e.args[0] as Notification).type === "status";
const isMessage = (text: string) => (e: { event: string; args: unknown[] }) => e.event === "message" && (e.args[0] as Message).text === text;

/** A series of GET /metrics with one `transport` label; 0 while it is absent (a counter never incremented). */
const metricOf = async (t: TestApp, name: string, transport: string): Promise<number> =>
  metric(await readMetrics(t.url), `${name}{transport="${transport}"}`) ?? 0;

const broadcast = (t: TestApp, message: string) =>
  fetch(`${t.url}/broadcast-to-all`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ message }) });

describe("abuse limits", function () {
  this.timeout(20_000);
  const defer = useCleanup();

  const app = async (env: Record<string, string> = {}): Promise<TestApp> => {
    const t = await startApp(env);
    defer(() => t.close());
    return t;
  };
  const io = async (t: TestApp, opts: Parameters<typeof connectIo>[1] = {}): Promise<IoClient> => {
    const c = await connectIo(t.url, opts);
    defer(() => c.close());
    await c.next("welcome");
    return c;
  };
  const ws = async (t: TestApp, path: string): Promise<WsClient> => {
    const c = await connectWs(`${t.wsUrl}${path}`);
    defer(() => c.close());
    await c.next(); // welcome
    return c;
  };

  describe("configuration", () => {
    it("names every bad limit variable in one error", () => {
      let err: unknown;
      try {
        loadConfig({
          RATE_LIMIT_MESSAGES_PER_SEC: "-1",
          RATE_LIMIT_BURST: "lots",
          RATE_LIMIT_DISCONNECT_AFTER: "1.5",
          STATUS_INTERVAL_SEC: "-0.5",
          MAX_ROOMS_PER_CONNECTION: "many",
          MAX_CONNECTIONS: "-3",
        });
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(ConfigError);
      const problems = (err as ConfigError).problems.join("\n");
      for (const name of [
        "RATE_LIMIT_MESSAGES_PER_SEC",
        "RATE_LIMIT_BURST",
        "RATE_LIMIT_DISCONNECT_AFTER",
        "STATUS_INTERVAL_SEC",
        "MAX_ROOMS_PER_CONNECTION",
        "MAX_CONNECTIONS",
      ]) {
        expect(problems).to.include(name);
      }
    });

    it("accepts 0 (off) for the limits that document it", () => {
      expect(() =>
        loadConfig({
          RATE_LIMIT_MESSAGES_PER_SEC: "0",
          RATE_LIMIT_DISCONNECT_AFTER: "0",
          STATUS_INTERVAL_SEC: "0",
          MAX_ROOMS_PER_CONNECTION: "0",
          MAX_CONNECTIONS: "0",
        }),
      ).to.not.throw();
    });
  });

  describe("message rate (RATE_LIMIT_MESSAGES_PER_SEC, RATE_LIMIT_BURST)", () => {
    it("Socket.IO, defaults (20/s, burst 10, cut after 20 refusals in a row): refuses what is over the bucket with RATE_LIMITED, broadcasts only what it accepted, serves the others", async () => {
      const t = await app();
      const flooder = await io(t, { clientId: "flooder" });
      const other = await io(t, { clientId: "other", transports: ["polling"] });
      const line = await ws(t, "/ws");

      const started = performance.now();
      const acks: Ack[] = await Promise.all(Array.from({ length: 25 }, (_, i) => flooder.socket.emitWithAck("message", `flood ${i}`)));
      const elapsedSec = (performance.now() - started) / 1000;
      const accepted = acks.flatMap((a, i) => (a.ok ? [i] : []));
      // The burst, then at most what the rate refilled meanwhile.
      expect(accepted.slice(0, 10)).to.deep.equal(Array.from({ length: 10 }, (_, i) => i));
      expect(accepted.length).to.be.at.most(10 + Math.ceil(20 * elapsedSec) + 1);
      const refused = acks.filter((a) => !a.ok);
      expect(refused.length).to.be.greaterThan(0);
      for (const a of refused) {
        expect(a).to.include({ ok: false, code: "RATE_LIMITED" });
        expect(a.error).to.match(/^rate limited/);
      }

      // Another connection has a bucket of its own: its message reaches everyone.
      expect(await other.socket.emitWithAck("message", "other still served")).to.deep.equal({ ok: true });
      for (const c of [flooder, other]) await c.next("message", (m: Message) => m.text === "other still served");
      await line.next((l) => l.endsWith("says: other still served"));
      // Sent after the flood was answered, so everything of the flood that was broadcast came first.
      const floodSeen = other.inbox.all((e) => e.event === "message" && (e.args[0] as Message).from === "flooder").map((e) => (e.args[0] as Message).text);
      expect(floodSeen).to.deep.equal(accepted.map((i) => `flood ${i}`));
      expect(line.inbox.all((l) => / says: flood \d+$/.test(l))).to.have.length(accepted.length);

      expect(await metricOf(t, "wbs_rate_limited_total", "socket.io")).to.equal(refused.length);
      expect(await metricOf(t, "wbs_rate_limit_disconnects_total", "socket.io")).to.equal(0);
      expect(flooder.socket.connected).to.equal(true);
    });

    it("Socket.IO: every event takes from the bucket (join, leave, status, unknown events)", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "1", RATE_LIMIT_BURST: "3", RATE_LIMIT_DISCONNECT_AFTER: "0" });
      const c = await io(t, { clientId: "eventful" });
      const other = await io(t, { clientId: "calm" });
      for (let i = 0; i < 3; i++) c.socket.emit("no-such-event", i);
      for (const [event, arg] of [
        ["message", "after unknown events"],
        ["join", "r1"],
        ["leave", "r1"],
        ["status", undefined],
      ] as const) {
        const ack: Ack = arg === undefined ? await c.socket.emitWithAck(event) : await c.socket.emitWithAck(event, arg);
        expect(ack, event).to.include({ ok: false, code: "RATE_LIMITED" });
      }
      expect(await other.socket.emitWithAck("join", "r1")).to.deep.equal({ ok: true, room: "r1" });
      expect(await other.socket.emitWithAck("message", "sentinel")).to.deep.equal({ ok: true });
      expect((await c.next("message")).text).to.equal("sentinel");
      expect(c.inbox.all((e) => e.event === "message")).to.have.length(1);
      expect(await metricOf(t, "wbs_rate_limited_total", "socket.io")).to.equal(4);
    });

    it("/ws text mode, echo and broadcast: answers 'Error: rate limited' for each refused frame and broadcasts only the accepted ones", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "5", RATE_LIMIT_BURST: "10", RATE_LIMIT_DISCONNECT_AFTER: "0" });
      const flooder = await ws(t, "/ws/ws-flooder");
      const sender = await ws(t, "/ws");
      const observer = await io(t, { clientId: "observer" });

      const started = performance.now();
      for (let i = 0; i < 30; i++) flooder.ws.send(`flood ${i}`);
      // One answer per frame, in order: its echo or the refusal.
      const answers: string[] = [];
      for (let i = 0; i < 30; i++) answers.push(await flooder.next((l) => l.startsWith("Server echo: flood") || l.startsWith("Error")));
      const elapsedSec = (performance.now() - started) / 1000;
      const accepted = answers.filter((a) => a.startsWith("Server echo"));
      expect(accepted.slice(0, 10)).to.deep.equal(Array.from({ length: 10 }, (_, i) => `Server echo: flood ${i}`));
      expect(accepted.length).to.be.at.most(10 + Math.ceil(5 * elapsedSec) + 1);
      const refused = answers.filter((a) => !a.startsWith("Server echo"));
      expect(refused.length).to.be.greaterThan(0);
      for (const a of refused) expect(a).to.match(/^Error: rate limited/);

      // Broadcast mode: the same bucket per connection, refused frames are not broadcast.
      for (let i = 0; i < 30; i++) sender.ws.send(`wave ${i}`);
      const lines: string[] = [];
      for (let i = 0; i < 30; i++) lines.push(await sender.next((l) => / says: wave \d+$/.test(l) || l.startsWith("Error")));
      const broadcastLines = lines.filter((l) => !l.startsWith("Error"));
      expect(broadcastLines.length).to.be.within(10, 29);
      for (const l of lines.filter((x) => x.startsWith("Error"))) expect(l).to.match(/^Error: rate limited/);
      expect(await observer.socket.emitWithAck("message", "sentinel")).to.deep.equal({ ok: true });
      await observer.next("message", (m: Message) => m.text === "sentinel");
      const waves = observer.inbox.all((e) => e.event === "message" && (e.args[0] as Message).text.startsWith("wave ")).map((e) => (e.args[0] as Message).text);
      expect(waves).to.deep.equal(broadcastLines.map((l) => /says: (wave \d+)$/.exec(l)![1]));
      // The flooder still receives (and was never disconnected).
      await flooder.next((l) => l.endsWith("says: sentinel"));

      expect(await metricOf(t, "wbs_rate_limited_total", "ws")).to.equal(refused.length + (30 - broadcastLines.length));
    });

    it("/ws JSON mode: answers an error frame with code RATE_LIMITED", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "1", RATE_LIMIT_BURST: "2", RATE_LIMIT_DISCONNECT_AFTER: "0" });
      const c = await connectWs(`${t.wsUrl}/ws?format=json`);
      defer(() => c.close());
      await c.nextJson("welcome");
      for (let i = 0; i < 4; i++) c.ws.send(JSON.stringify({ text: `json ${i}` }));
      const frames: { type: string; data: { text?: string; error?: string; code?: string } }[] = [];
      for (let i = 0; i < 4; i++) {
        frames.push(JSON.parse(await c.next((f) => /"type":"(message|error)"/.test(f))) as (typeof frames)[number]);
      }
      expect(frames.map((f) => f.type)).to.deep.equal(["message", "message", "error", "error"]);
      expect(frames.slice(0, 2).map((f) => f.data.text)).to.deep.equal(["json 0", "json 1"]);
      for (const f of frames.slice(2)) {
        expect(f.data.code).to.equal("RATE_LIMITED");
        expect(f.data.error).to.match(/^rate limited/);
      }
      expect(await metricOf(t, "wbs_rate_limited_total", "ws")).to.equal(2);
    });

    it("limits nothing with RATE_LIMIT_MESSAGES_PER_SEC=0", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "0", RATE_LIMIT_BURST: "1" });
      const c = await io(t, { clientId: "unlimited" });
      const line = await ws(t, "/ws/unlimited-ws");
      const acks: Ack[] = await Promise.all(Array.from({ length: 150 }, (_, i) => c.socket.emitWithAck("message", `m ${i}`)));
      expect(acks.every((a) => a.ok)).to.equal(true);
      for (let i = 0; i < 150; i++) line.ws.send(`e ${i}`);
      await line.next((l) => l === "Server echo: e 149");
      expect(line.inbox.all((l) => l.startsWith("Server echo: e "))).to.have.length(150);
      expect(line.inbox.all((l) => l.startsWith("Error"))).to.deep.equal([]);
      expect(await metricOf(t, "wbs_rate_limited_total", "socket.io")).to.equal(0);
      expect(await metricOf(t, "wbs_rate_limited_total", "ws")).to.equal(0);
    });

    it("does not limit POST /broadcast-to-all", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "1", RATE_LIMIT_BURST: "1" });
      const c = await io(t, { clientId: "listener" });
      for (let i = 0; i < 30; i++) {
        const res = await broadcast(t, `http ${i}`);
        expect(res.status, `broadcast ${i}`).to.equal(200);
      }
      await c.next("message", (m: Message) => m.text === "http 29");
      expect(c.inbox.all((e) => e.event === "message")).to.have.length(30);
    });
  });

  describe("disconnect after refusals in a row (RATE_LIMIT_DISCONNECT_AFTER)", () => {
    it("closes /ws with 1008 'rate limited' and Socket.IO from the server after N refusals in a row, and counts them", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "1", RATE_LIMIT_BURST: "2", RATE_LIMIT_DISCONNECT_AFTER: "4" });
      const sio = await io(t, { clientId: "sio-flooder" });
      const line = await ws(t, "/ws");
      const bystander = await io(t, { clientId: "bystander" });

      // Two accepted, then three refused: one short of the limit.
      const acks: Ack[] = await Promise.all(Array.from({ length: 5 }, (_, i) => sio.socket.emitWithAck("message", `s ${i}`)));
      expect(acks.map((a) => a.code ?? "ok")).to.deep.equal(["ok", "ok", "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]);
      for (let i = 0; i < 5; i++) line.ws.send(`w ${i}`);
      const answers: string[] = [];
      for (let i = 0; i < 5; i++) answers.push(await line.next((l) => / says: w \d$/.test(l) || l.startsWith("Error")));
      expect(answers.map((a) => (a.startsWith("Error: rate limited") ? "refused" : "ok"))).to.deep.equal(["ok", "ok", "refused", "refused", "refused"]);

      // Still connected: a broadcast sent now reaches both.
      await broadcast(t, "still connected?");
      await sio.next("message", (m: Message) => m.text === "still connected?");
      await line.next((l) => l === "still connected?");

      // The fourth refusal in a row closes them.
      const sioGone = new Promise<string>((resolve) => sio.socket.once("disconnect", resolve));
      sio.socket.emit("message", "one too many");
      line.ws.send("one too many");
      expect(await sioGone).to.equal("io server disconnect");
      const closed = await line.closed;
      expect(closed.code).to.equal(1008);
      expect(closed.reason).to.match(/^rate limited/);

      // Everyone else goes on.
      await broadcast(t, "after the cut");
      await bystander.next("message", (m: Message) => m.text === "after the cut");
      expect(await metricOf(t, "wbs_rate_limited_total", "socket.io")).to.equal(4);
      expect(await metricOf(t, "wbs_rate_limited_total", "ws")).to.equal(4);
      expect(await metricOf(t, "wbs_rate_limit_disconnects_total", "socket.io")).to.equal(1);
      expect(await metricOf(t, "wbs_rate_limit_disconnects_total", "ws")).to.equal(1);
      const { clients } = (await (await fetch(`${t.url}/clients`)).json()) as { clients: string[] };
      expect(clients).to.deep.equal(["bystander"]);
    });

    it("shares the penalty with every instance: a flooder cut on ws1 cannot reconnect on ws2", async () => {
      const c = await startCluster(2, {
        RATE_LIMIT_MESSAGES_PER_SEC: "1",
        RATE_LIMIT_BURST: "1",
        RATE_LIMIT_DISCONNECT_AFTER: "2",
        RATE_LIMIT_PENALTY_SEC: "30",
      });
      defer(() => c.stop());
      const wsUrl = (i: number) => c.instances[i]!.url.replace(/^http/, "ws");
      const flooder = await connectWs(`${wsUrl(0)}/ws`);
      defer(() => flooder.close());
      for (let i = 0; i < 10; i++) flooder.ws.send(`flood ${i}`);
      expect((await flooder.closed).code).to.equal(1008);
      // The penalty reaches ws2 through Redis (a moment later): poll its refusal with a deadline.
      const deadline = Date.now() + 5_000;
      let status = 0;
      while (status !== 429 && Date.now() < deadline) {
        status = await connectWs(`${wsUrl(1)}/ws`).then(
          (ok) => {
            ok.close();
            return 101;
          },
          (err: { status?: number }) => err.status ?? 0,
        );
      }
      expect(status).to.equal(429);
      expect((await ioRefusal(c.instances[1]!.url, { clientId: "comeback" })).data).to.deep.equal({ code: "RATE_LIMITED" });
    });

    it("drops what a cut client still sends, and refuses new sessions from its address for RATE_LIMIT_PENALTY_SEC; connections already open stay", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "1", RATE_LIMIT_BURST: "1", RATE_LIMIT_DISCONNECT_AFTER: "2", RATE_LIMIT_PENALTY_SEC: "1" });
      const bystander = await io(t, { clientId: "same-address" });
      const flooder = await ws(t, "/ws");
      // One accepted, one refused, the second refusal cuts it; the other 47 arrive after the cut.
      for (let i = 0; i < 50; i++) flooder.ws.send(`flood ${i}`);
      expect((await flooder.closed).code).to.equal(1008);
      expect(await metricOf(t, "wbs_rate_limited_total", "ws")).to.equal(2);
      expect(await metricOf(t, "wbs_rate_limit_disconnects_total", "ws")).to.equal(1);

      // Its address (127.0.0.1, as every client here) is in the penalty box.
      const refused = await wsRefusal(`${t.wsUrl}/ws`);
      expect(refused.status).to.equal(429);
      expect(JSON.parse(refused.body)).to.include({ code: "RATE_LIMITED" });
      expect((await ioRefusal(t.url, { clientId: "comeback" })).data).to.deep.equal({ code: "RATE_LIMITED" });
      // The connection already open from that address is served.
      await broadcast(t, "for those still here");
      await bystander.next("message", (m: Message) => m.text === "for those still here");

      // After the penalty, the address may connect again.
      const deadline = Date.now() + 5_000;
      let back: WsClient | undefined;
      while (!back && Date.now() < deadline) {
        back = await connectWs(`${t.wsUrl}/ws`).catch((err: { status?: number }) => {
          expect(err.status).to.equal(429);
          return new Promise<undefined>((r) => setTimeout(r, 100));
        });
      }
      expect(back, "connected after the penalty").to.not.equal(undefined);
      back!.close();
    });

    it("starts counting again after an accepted message", async () => {
      // The periodic notification is the clock: each one is PERIODIC_INTERVAL_SEC after the last.
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "4", RATE_LIMIT_BURST: "2", RATE_LIMIT_DISCONNECT_AFTER: "3", PERIODIC_INTERVAL_SEC: "0.25" });
      const c = await io(t, { clientId: "patient" });
      const first: Ack[] = await Promise.all(Array.from({ length: 4 }, (_, i) => c.socket.emitWithAck("message", `a ${i}`)));
      expect(first.map((a) => a.ok)).to.deep.equal([true, true, false, false]);
      let refusedTotal = 2;

      // Three periodic notifications sent after those refusals: more than half a second, two tokens back.
      const periodic = (n: Notification) => n.type === "periodic";
      const pending = c.inbox.all((e) => e.event === "notification" && periodic(e.args[0] as Notification)).length;
      for (let i = 0; i < pending + 3; i++) await c.next("notification", periodic, 3_000);
      expect(await c.socket.emitWithAck("message", "accepted again")).to.deep.equal({ ok: true });

      // Two refusals in a row again: four in all, but never three in a row.
      let streak = 0;
      for (let i = 0; i < 20 && streak < 2; i++) {
        const ack: Ack = await c.socket.emitWithAck("message", `b ${i}`);
        if (ack.ok) streak = 0;
        else {
          expect(ack.code).to.equal("RATE_LIMITED");
          streak++;
          refusedTotal++;
        }
      }
      expect(streak).to.equal(2);
      expect(refusedTotal).to.be.greaterThan(3);
      await broadcast(t, "you are still here");
      await c.next("message", (m: Message) => m.text === "you are still here");
      expect(c.socket.connected).to.equal(true);
      expect(await metricOf(t, "wbs_rate_limit_disconnects_total", "socket.io")).to.equal(0);
    });
  });

  describe("status notifications (STATUS_INTERVAL_SEC)", () => {
    const env = { STATUS_INTERVAL_SEC: "0.5", RATE_LIMIT_MESSAGES_PER_SEC: "1000", RATE_LIMIT_BURST: "1000" };

    /** Status notifications the observer got before `sentinel`; asserts one came after the last ping. */
    const statusesAround = async (observer: IoClient, pingText: string, count: number) => {
      for (let i = 0; i < count; i++) await observer.next("message", (m: Message) => m.text === pingText);
      const pings = observer.inbox.all(isMessage(pingText));
      expect(pings).to.have.length(count);
      const lastPing = observer.inbox.items.lastIndexOf(pings[count - 1]!);
      // The last ping is answered too (shared or trailing status), after it arrived.
      await observer.inbox.next((e) => isStatus(e) && observer.inbox.items.indexOf(e) > lastPing, 5_000, "a status after the last ping");
    };

    it("broadcasts 50 pings from one Socket.IO client but only a few status notifications, the last after the last ping", async () => {
      const t = await app(env);
      const pinger = await io(t, { clientId: "pinger" });
      const observer = await io(t, { clientId: "observer", transports: ["polling"] });
      const line = await ws(t, "/ws");
      const started = performance.now();
      for (let i = 0; i < 50; i++) pinger.socket.emit("message", "ping");
      await statusesAround(observer, "ping", 50);
      expect(await pinger.socket.emitWithAck("message", "sentinel")).to.deep.equal({ ok: true });
      await observer.next("message", (m: Message) => m.text === "sentinel");
      await line.next((l) => l.endsWith("says: sentinel"));
      const elapsedSec = (performance.now() - started) / 1000;
      const bound = Math.floor(elapsedSec / 0.5) + 2;

      const sentinelAt = observer.inbox.items.findIndex(isMessage("sentinel"));
      const statuses = observer.inbox.items.slice(0, sentinelAt).filter(isStatus);
      console.log(`      50 pings in ${elapsedSec.toFixed(2)} s: ${statuses.length} status notification(s) (bound ${bound})`);
      expect(statuses.length).to.be.within(1, bound);
      expect(statuses[0]!.args[0]).to.include({ type: "status", requestedBy: "pinger", clients: 3 });
      // /ws sees the same: every ping line, few status lines.
      const lineUpTo = line.inbox.items.findIndex((l) => l.endsWith("says: sentinel"));
      expect(line.inbox.items.slice(0, lineUpTo).filter((l) => / says: ping$/.test(l))).to.have.length(50);
      expect(line.inbox.items.slice(0, lineUpTo).filter((l) => l.includes("TEST REQUEST")).length).to.be.within(1, bound);
    });

    it("coalesces pings sent over /ws the same way", async () => {
      const t = await app(env);
      const pinger = await ws(t, "/ws");
      const observer = await io(t, { clientId: "observer" });
      const started = performance.now();
      for (let i = 0; i < 50; i++) pinger.ws.send("test");
      await statusesAround(observer, "test", 50);
      await pinger.next((l) => l.includes("TEST REQUEST from anon-"));
      pinger.ws.send("sentinel");
      await observer.next("message", (m: Message) => m.text === "sentinel");
      const elapsedSec = (performance.now() - started) / 1000;
      const sentinelAt = observer.inbox.items.findIndex(isMessage("sentinel"));
      expect(observer.inbox.items.slice(0, sentinelAt).filter(isStatus).length).to.be.within(1, Math.floor(elapsedSec / 0.5) + 2);
    });

    it("coalesces the status event (with ack) the same way", async () => {
      const t = await app(env);
      const asker = await io(t, { clientId: "asker" });
      const observer = await io(t, { clientId: "observer" });
      const started = performance.now();
      const acks: Ack[] = await Promise.all(Array.from({ length: 50 }, () => asker.socket.emitWithAck("status")));
      expect(acks.every((a) => a.ok)).to.equal(true);
      // At least one status notification answers them.
      await observer.next("notification", (n: Notification) => n.type === "status");
      expect(await asker.socket.emitWithAck("message", "sentinel")).to.deep.equal({ ok: true });
      await observer.next("message", (m: Message) => m.text === "sentinel");
      const elapsedSec = (performance.now() - started) / 1000;
      const sentinelAt = observer.inbox.items.findIndex(isMessage("sentinel"));
      const statuses = observer.inbox.items.slice(0, sentinelAt).filter(isStatus);
      expect(statuses.length).to.be.within(1, Math.floor(elapsedSec / 0.5) + 2);
      // No chat lines for the status event.
      expect(observer.inbox.all((e) => e.event === "message")).to.have.length(1);
    });
  });

  describe("rooms per connection (MAX_ROOMS_PER_CONNECTION)", () => {
    it("refuses a join past the cap with TOO_MANY_ROOMS; re-joining is free; leave makes room", async () => {
      const t = await app({ MAX_ROOMS_PER_CONNECTION: "3" });
      const c = await io(t, { clientId: "joiner" });
      const other = await io(t, { clientId: "other-joiner" });
      for (const room of ["r1", "r2", "r3"]) expect(await c.socket.emitWithAck("join", room)).to.deep.equal({ ok: true, room });
      const over: Ack = await c.socket.emitWithAck("join", "r4");
      expect(over).to.include({ ok: false, code: "TOO_MANY_ROOMS" });
      expect(over.error).to.be.a("string").and.not.empty;
      expect(await c.socket.emitWithAck("join", "r2")).to.deep.equal({ ok: true, room: "r2" });
      expect(await c.socket.emitWithAck("join", "r4")).to.include({ ok: false, code: "TOO_MANY_ROOMS" });
      expect(await c.socket.emitWithAck("leave", "r1")).to.deep.equal({ ok: true, room: "r1" });
      expect(await c.socket.emitWithAck("join", "r4")).to.deep.equal({ ok: true, room: "r4" });
      expect(await c.socket.emitWithAck("join", "r5")).to.include({ ok: false, code: "TOO_MANY_ROOMS" });
      // The cap is per connection.
      for (const room of ["r1", "r5", "r6"]) expect(await other.socket.emitWithAck("join", room)).to.deep.equal({ ok: true, room });

      // Membership is what the acks said: r4 yes, r5 and r1 no.
      for (const room of ["r5", "r1", "r4"]) await other.socket.emitWithAck("message", { text: `to ${room}`, room });
      const m = await c.next("message");
      expect(m).to.include({ text: "to r4", room: "r4" });
      await other.socket.emitWithAck("message", "sentinel");
      expect((await c.next("message")).text).to.equal("sentinel");
    });

    it("caps at 100 rooms by default and not at all with 0", async () => {
      const capped = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      const c = await io(capped, { clientId: "many" });
      const acks: Ack[] = await Promise.all(Array.from({ length: 101 }, (_, i) => c.socket.emitWithAck("join", `room-${i}`)));
      expect(acks.filter((a) => a.ok)).to.have.length(100);
      expect(acks[100]).to.include({ ok: false, code: "TOO_MANY_ROOMS" });

      const open = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "0", MAX_ROOMS_PER_CONNECTION: "0", INSTANCE_ID: "no-cap" });
      const d = await io(open, { clientId: "many" });
      const all: Ack[] = await Promise.all(Array.from({ length: 150 }, (_, i) => d.socket.emitWithAck("join", `room-${i}`)));
      expect(all.every((a) => a.ok)).to.equal(true);
    });
  });

  describe("connections per instance (MAX_CONNECTIONS)", () => {
    const overCapacity = (body: string, headers: Record<string, unknown>) => {
      expect(JSON.parse(body)).to.include({ code: "OVER_CAPACITY" });
      expect(JSON.parse(body).error).to.be.a("string").and.not.empty;
      expect(headers["retry-after"]).to.equal("1");
    };

    it("refuses new Engine.IO sessions and /ws upgrades with 503 OVER_CAPACITY when full; the connected keep working; one leaves, one gets in", async () => {
      const t = await app({ MAX_CONNECTIONS: "3" });
      const a = await io(t, { clientId: "a" });
      const b = await io(t, { clientId: "b", transports: ["polling"] });
      const line = await ws(t, "/ws/line");

      const polling = await pollingHandshake(t.url);
      expect(polling.status).to.equal(503);
      overCapacity(polling.body, polling.headers);
      const upgrade = await wsRefusal(`${t.wsUrl}/ws`);
      expect(upgrade.status).to.equal(503);
      overCapacity(upgrade.body, upgrade.headers);
      expect((await wsRefusal(`${t.wsUrl}/ws/another`)).status).to.equal(503);
      const wsOnly = await ioRefusal(t.url, { clientId: "c", transports: ["websocket"] });
      expect(wsOnly.message).to.match(/websocket error/);
      const pollOnly = await ioRefusal(t.url, { clientId: "c", transports: ["polling"] });
      expect(pollOnly.description).to.equal(503);
      // HTTP is not a connection.
      expect((await fetch(`${t.url}/healthz`)).status).to.equal(200);

      // The three go on, polling requests of b's session included.
      expect(await b.socket.emitWithAck("message", "full house")).to.deep.equal({ ok: true });
      await a.next("message", (m: Message) => m.text === "full house");
      await b.next("message", (m: Message) => m.text === "full house");
      await line.next((l) => l.endsWith("says: full house"));

      // One leaves: a new one gets in (once the server has seen it go), and the house is full again.
      const gone = t.logs.next((r) => r.msg === "disconnected" && r.clientId === "a");
      a.close();
      await gone;
      const deadline = Date.now() + 5_000;
      let c: IoClient | undefined;
      while (!c) {
        try {
          c = await connectIo(t.url, { clientId: "c" });
        } catch (err) {
          if (Date.now() > deadline) throw err;
        }
      }
      const joined = c;
      defer(() => joined.close());
      expect((await joined.next("welcome")).clientId).to.equal("c");
      expect((await wsRefusal(`${t.wsUrl}/ws`)).status).to.equal(503);
    });

    it("counts polling handshakes that never upgrade, and frees the slot when such a session closes", async () => {
      const t = await app({ MAX_CONNECTIONS: "3" });
      const sids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const h = await pollingHandshake(t.url);
        expect(h.status, h.body).to.equal(200);
        sids.push(h.sid!);
      }
      const fourth = await pollingHandshake(t.url);
      expect(fourth.status).to.equal(503);
      overCapacity(fourth.body, fourth.headers);
      expect((await wsRefusal(`${t.wsUrl}/ws`)).status).to.equal(503);

      // A request of an existing session is served: it is not a new one.
      const connect = await pollingSend(t.url, sids[0]!, "40");
      expect(connect.status).to.equal(200);

      // Close one session (Engine.IO close packet): a new handshake gets in again.
      expect((await pollingSend(t.url, sids[1]!, "1")).status).to.equal(200);
      const deadline = Date.now() + 5_000;
      let again = await pollingHandshake(t.url);
      while (again.status === 503 && Date.now() < deadline) again = await pollingHandshake(t.url);
      expect(again.status).to.equal(200);
      expect((await pollingHandshake(t.url)).status).to.equal(503);
      for (const sid of [sids[0]!, sids[2]!, again.sid!]) await pollingSend(t.url, sid, "1");
    });

    it("has no cap with MAX_CONNECTIONS=0", async () => {
      const t = await app({ MAX_CONNECTIONS: "0" });
      const clients = await Promise.all(Array.from({ length: 30 }, (_, i) => io(t, { clientId: `n${i}` })));
      expect(clients).to.have.length(30);
      expect((await ws(t, "/ws")).ws.readyState).to.equal(1);
    });
  });
});
