import { expect } from "chai";
import type { InstanceProcess, LogRecord } from "../harness/instance.js";
import { poll } from "../harness/waiting.js";
import type { ChatMessage } from "../server/protocol.js";
import { type TestApp, startApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { type IoClient, connectIo, connectWs } from "./helpers/clients.js";
import { startCluster } from "./helpers/cluster.js";
import { type DurableRedis, startDurableRedis, startInstancesOn } from "./helpers/durable-redis.js";
import { NumberedPublisher, OFFSET, type Received, ResumingIo, ResumingWs, compareOffsets, expectEveryNumberOnce, httpBroadcast } from "./helpers/recovery.js";

const wsBase = (url: string) => url.replace(/^http/, "ws");

/** `text@offset` of each message, `welcome` for a welcome: a whole sequence compares in one assertion. */
const shape = (items: Received[]) => items.map((r) => (r.event === "welcome" ? "welcome" : `${r.data.text}@${r.data.offset}`));
const shapeOf = (messages: ChatMessage[]) => messages.map((m) => `${m.text}@${m.offset}`);

/** The first record logged at or after index `from` that matches. */
const logAfter = (inst: InstanceProcess, from: number, match: (r: LogRecord) => boolean, timeoutMs = 15_000): Promise<LogRecord> =>
  inst.waitForLog((r) => inst.logs.indexOf(r) >= from && match(r), timeoutMs);

/** The history as GET /history shows it (admin endpoints are open on loopback). */
const history = async (url: string, since = "0-0"): Promise<{ epoch: string; complete: boolean; entries: { data: { text?: string; offset: string } }[] }> =>
  (await fetch(`${url}/history?since=${since}&limit=1000`)).json() as never;

describe("recovery: no message lost across reconnects", function () {
  this.timeout(30_000);
  const defer = useCleanup();

  const app = async (env: Record<string, string> = {}): Promise<TestApp> => {
    const t = await startApp(env);
    defer(() => t.close());
    return t;
  };
  const io = async (url: string, opts: Parameters<typeof connectIo>[1] = {}): Promise<IoClient> => {
    const c = await connectIo(url, opts);
    defer(() => c.close());
    return c;
  };
  const resumingIo = (url: string, opts: ConstructorParameters<typeof ResumingIo>[1] = {}): ResumingIo => {
    const c = new ResumingIo(url, opts);
    defer(() => c.close());
    return c;
  };
  const resumingWs = (): ResumingWs => {
    const c = new ResumingWs();
    defer(() => c.close());
    return c;
  };
  /** Sends each text from `sender` (Socket.IO) or, for `http:` ones, by POST /broadcast-to-all; resolves with the copies `sender` received (with their offsets). */
  const publish = async (url: string, sender: IoClient, texts: string[], room?: string): Promise<ChatMessage[]> => {
    for (const text of texts) {
      if (text.startsWith("http:")) await httpBroadcast(url, text, room);
      else expect(await sender.socket.emitWithAck("message", room === undefined ? text : { text, room })).to.deep.equal({ ok: true });
    }
    const copies: ChatMessage[] = [];
    if (room === undefined) for (const text of texts) copies.push(await sender.next<ChatMessage>("message", (m) => m.text === text));
    return copies;
  };

  describe("one instance (in-memory history)", () => {
    it("Socket.IO: offsets increase; a reconnect with {offset, epoch} gets welcome {recovered: true, replayed: 5}, exactly the 5 missed in order, then live", async () => {
      const t = await app();
      const r = resumingIo(t.url);
      const first = await r.connect();
      expect(first).to.include({ recovered: false, replayed: 0, instance: "test-1" });
      expect(first.epoch).to.be.a("string").and.not.equal("");
      expect(first.offset).to.match(OFFSET);
      const other = await io(t.url, { clientId: "other" });

      await publish(t.url, other, ["m1", "m2", "m3"]);
      const live = [await r.message("m1"), await r.message("m2"), await r.message("m3")];
      const offsets = [first.offset, ...live.map((m) => m.offset!)];
      for (let i = 1; i < offsets.length; i++) expect(compareOffsets(offsets[i]!, offsets[i - 1]!), `offsets ${offsets.join(" < ")}`).to.equal(1);
      expect(r.offset).to.equal(live[2]!.offset);

      r.socket.disconnect();
      const missed = await publish(t.url, other, ["m4", "http:m5", "m6", "http:m7", "m8"]);
      const back = await r.connect();
      expect(back).to.include({ recovered: true, replayed: 5, epoch: first.epoch });
      const [m9] = await publish(t.url, other, ["m9"]);
      await r.message("m9");
      expect(shape(r.since(1))).to.deep.equal(["welcome", ...shapeOf(missed), ...shapeOf([m9!])]);
      expect(missed.map((m) => m.origin)).to.deep.equal(["socket.io", "http", "socket.io", "http", "socket.io"]);
    });

    it("/ws JSON: ?since=&epoch= gets welcome {recovered: true, replayed: 5}, the 5 frames with data.offset in order, then live", async () => {
      const t = await app();
      const r = resumingWs();
      const first = await r.connect(t.wsUrl);
      expect(first).to.include({ recovered: false, replayed: 0 });
      const other = await io(t.url, { clientId: "other" });
      const sent = await publish(t.url, other, ["m1", "m2", "m3"]);
      for (const m of sent) expect((await r.message(m.text)).offset).to.equal(m.offset);

      r.close();
      await r.closed;
      const missed = await publish(t.url, other, ["http:m4", "m5", "m6", "http:m7", "m8"]);
      const back = await r.connect(t.wsUrl);
      expect(back).to.include({ recovered: true, replayed: 5, epoch: first.epoch });
      const [m9] = await publish(t.url, other, ["m9"]);
      await r.message("m9");
      expect(shape(r.since(1))).to.deep.equal(["welcome", ...shapeOf(missed), ...shapeOf([m9!])]);
    });

    it("/ws text mode: ?since=&epoch= gets the welcome line, the missed lines in order, then live lines", async () => {
      const t = await app();
      // A JSON client learns the epoch and an offset (text frames carry neither).
      const json = resumingWs();
      await json.connect(t.wsUrl);
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m1"]);
      await json.message("m1");
      json.close();
      await publish(t.url, other, ["m2", "http:m3", "m4"]);

      const line = await connectWs(`${t.wsUrl}/ws?since=${json.offset}&epoch=${json.epoch}`);
      defer(() => line.close());
      await line.next((l) => l.startsWith(" Welcome!"));
      await publish(t.url, other, ["m5"]);
      await line.next((l) => l.endsWith("m5"));
      expect(line.inbox.items.slice(1)).to.deep.equal([
        "User other (via test-1) says: m2",
        "http:m3",
        "User other (via test-1) says: m4",
        "User other (via test-1) says: m5",
      ]);
    });

    it("trimmed by HISTORY_SIZE=3: recovered: false, still gets what is left (in order, once), then live", async () => {
      const t = await app({ HISTORY_SIZE: "3", RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      const r = resumingIo(t.url);
      await r.connect();
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m0"]);
      await r.message("m0");
      r.socket.disconnect();
      const missed = await publish(
        t.url,
        other,
        Array.from({ length: 10 }, (_, i) => `m${i + 1}`),
      );
      const back = await r.connect();
      expect(back).to.include({ recovered: false, replayed: 3 });
      const [m11] = await publish(t.url, other, ["m11"]);
      await r.message("m11");
      expect(shape(r.since(1))).to.deep.equal(["welcome", ...shapeOf(missed.slice(-3)), ...shapeOf([m11!])]);
    });

    it("trimmed by HISTORY_TTL_SEC: recovered: false once the client's offset has expired", async () => {
      const t = await app({ HISTORY_TTL_SEC: "0.3" });
      const r = resumingIo(t.url);
      await r.connect();
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m0", "m1"]);
      await r.message("m1");
      const away = r.offset!;
      r.socket.disconnect();
      await publish(t.url, other, ["m2"]);
      // Until m2 (the first thing the client missed) has expired.
      await poll(async () => (await history(t.url)).entries.every((e) => e.data.text !== "m2"), { timeoutMs: 5_000, what: "m2 to expire from the history" });
      await publish(t.url, other, ["m3"]);
      const back = await r.connect();
      expect(back, `reconnected with ${away}`).to.include({ recovered: false });
      await publish(t.url, other, ["m4"]);
      await r.message("m4");
      expect(
        r
          .since(1)
          .filter((e) => e.event === "message")
          .map((e) => e.data.text),
      ).to.deep.equal(back.replayed === 1 ? ["m3", "m4"] : ["m4"]);
    });

    it("a wrong epoch: recovered: false, replayed: 0 (offsets of another history mean nothing here)", async () => {
      const t = await app();
      const r = resumingIo(t.url);
      const first = await r.connect();
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m0"]);
      await r.message("m0");
      const old = r.offset!;
      r.close();
      await publish(t.url, other, ["m1", "m2"]);

      const stranger = resumingIo(t.url);
      stranger.epoch = `${first.epoch}x`;
      stranger.offset = old;
      const w = await stranger.connect();
      expect(w, "welcome for a wrong epoch").to.include({ recovered: false, replayed: 0, epoch: first.epoch });
      await publish(t.url, other, ["sentinel"]);
      await stranger.message("sentinel");
      expect(stranger.texts()).to.deep.equal(["sentinel"]);
    });

    it("a connection cut right after its welcome: reconnecting with the welcome's offset (as protocol.ts says to keep it) still gets the replay it never saw", async () => {
      const t = await app();
      const r = resumingIo(t.url);
      await r.connect();
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m1"]);
      await r.message("m1");
      const sent = r.offset!;
      r.socket.disconnect();
      const missed = await publish(t.url, other, ["m2", "m3", "m4"]);
      // The network drops between the welcome frame and the replayed ones: the client has the welcome (and keeps its offset), nothing after it.
      r.socket.once("welcome", () => r.socket.disconnect());
      const cut = await r.connect();
      expect(cut).to.include({ recovered: true, replayed: 3 });
      expect(r.texts()).to.deep.equal(["m1"]);
      const back = await r.connect();
      expect(back, `first welcome's offset ${cut.offset}; the client's offset before it ${sent}`).to.include({ recovered: true, replayed: 3 });
      await publish(t.url, other, ["m5"]);
      await r.message("m5");
      expect(shape(r.since(2))).to.deep.equal(["welcome", ...shapeOf(missed), `m5@${r.offset}`]);
    });

    it("status notifications are in the history (offset, replayed); periodic ones are per instance (no offset, not replayed)", async () => {
      const t = await app({ PERIODIC_INTERVAL_SEC: "0.1" });
      const r = resumingIo(t.url);
      await r.connect();
      const periodic = await r.inbox.next((e) => e.event === "notification" && e.data.type === "periodic");
      expect(periodic.data).not.to.have.property("offset");
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m1"]);
      await r.message("m1");
      r.socket.disconnect();
      // While it is away: periodic ticks (the other client sees one), a ping (a message and a status notification) and a message.
      await other.next("notification", (n: { type: string }) => n.type === "periodic");
      await publish(t.url, other, ["ping"]);
      const status = await other.next("notification", (n: { type: string }) => n.type === "status");
      expect(status.offset).to.match(OFFSET);
      await publish(t.url, other, ["m2"]);
      const back = await r.connect();
      expect(back).to.include({ recovered: true, replayed: 3 });
      await r.message("m2");
      const replayed = r.since(1).slice(1, 4);
      expect(replayed.map((e) => (e.event === "message" ? e.data.text : e.data.type))).to.deep.equal(["ping", "status", "m2"]);
      expect(replayed[1]!.data).to.deep.equal(status);
    });

    it("rooms: a client back with auth.rooms ['red'] recovers red and room-less broadcasts, not blue ones; /ws gets only the room-less", async () => {
      const t = await app();
      const r = resumingIo(t.url, { rooms: ["red"] });
      await r.connect();
      const other = await io(t.url, { clientId: "other" });
      // In red from the handshake on (auth.rooms), without a join.
      await publish(t.url, other, ["red-0"], "red");
      await r.message("red-0");
      const json = resumingWs();
      await json.connect(t.wsUrl);
      json.offset = r.offset;
      json.close();
      r.socket.disconnect();

      // Sent while it is away, to red, blue and everyone, from a client and over HTTP.
      const order = ["red-1", "blue-1", "all-1", "http:red-2", "http:blue-2", "http:all-2"];
      for (const text of order) {
        const room = /red/.test(text) ? "red" : /blue/.test(text) ? "blue" : undefined;
        await publish(t.url, other, [text], room);
      }
      const all = await history(t.url, r.offset);
      expect(all.entries.map((e) => e.data.text)).to.deep.equal(order);

      const back = await r.connect();
      expect(back).to.include({ recovered: true, replayed: 4 });
      await publish(t.url, other, ["blue-3"], "blue");
      await publish(t.url, other, ["red-3"], "red");
      await r.message("red-3");
      expect(r.since(1).map((e) => e.data.text ?? e.event)).to.deep.equal(["welcome", "red-1", "all-1", "http:red-2", "http:all-2", "red-3"]);

      // Without the room in auth: only what was for everyone.
      const noRooms = resumingIo(t.url);
      noRooms.epoch = back.epoch;
      noRooms.offset = json.offset;
      expect(await noRooms.connect()).to.include({ recovered: true, replayed: 2 });
      // /ws joins no rooms.
      const wsBack = await json.connect(t.wsUrl);
      expect(wsBack).to.include({ recovered: true, replayed: 2 });
      await publish(t.url, other, ["all-3"]);
      await json.message("all-3");
      await noRooms.message("all-3");
      expect(noRooms.texts()).to.deep.equal(["all-1", "http:all-2", "all-3"]);
      expect(json.since(1).map((e) => e.data.text ?? e.event)).to.deep.equal(["welcome", "all-1", "http:all-2", "all-3"]);
    });

    it("replay-to-live boundary: reconnecting again and again while a publisher sends nonstop, every number arrives once, in order", async () => {
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      const sender = await io(t.url, { clientId: "publisher" });
      const p = new NumberedPublisher(sender.socket);
      defer(() => p.stop().catch(() => undefined));
      const r = resumingIo(t.url);
      const w = resumingWs();
      await r.connect();
      await w.connect(t.wsUrl);
      p.start();
      // How many messages to let pass while connected, then while away, each round (0: at once).
      for (const [stay, away] of [
        [5, 0],
        [0, 20],
        [30, 1],
        [1, 100],
        [0, 0],
        [10, 3],
      ] as const) {
        await p.more(stay);
        r.socket.disconnect();
        w.close();
        await w.closed;
        await p.more(away);
        const [rw, ww] = await Promise.all([r.connect(), w.connect(t.wsUrl)]);
        expect(rw.recovered, `Socket.IO welcome ${JSON.stringify(rw)}`).to.equal(true);
        expect(ww.recovered, `/ws welcome ${JSON.stringify(ww)}`).to.equal(true);
      }
      await p.more(20);
      const last = await p.stop();
      await sender.socket.emitWithAck("message", "end");
      await Promise.all([r.message("end"), w.message("end")]);
      expectEveryNumberOnce(r, last, "Socket.IO receiver");
      expectEveryNumberOnce(w, last, "/ws receiver");
      expect(last).to.be.greaterThan(150);
    });

    it("HISTORY_SIZE=0: no offsets, and welcome says recovered: false even to a client that sends one", async () => {
      const t = await app({ HISTORY_SIZE: "0" });
      const r = resumingIo(t.url);
      expect(await r.connect()).to.include({ recovered: false, replayed: 0 });
      const w = resumingWs();
      expect(await w.connect(t.wsUrl)).to.include({ recovered: false, replayed: 0 });
      const other = await io(t.url, { clientId: "other" });
      await publish(t.url, other, ["m1", "http:m2"]);
      for (const c of [r, w]) for (const text of ["m1", "http:m2"]) expect(await c.message(text)).not.to.have.property("offset");
      await other.socket.emitWithAck("message", "ping");
      const status = await r.inbox.next((e) => e.event === "notification" && e.data.type === "status");
      expect(status.data).not.to.have.property("offset");

      r.socket.disconnect();
      r.epoch = "someepoch";
      r.offset = "1700000000000-0";
      expect(await r.connect()).to.include({ recovered: false, replayed: 0 });
      w.close();
      await w.closed;
      w.epoch = "someepoch";
      w.offset = "1700000000000-0";
      expect(await w.connect(t.wsUrl)).to.include({ recovered: false, replayed: 0 });
      expect((await fetch(`${t.url}/history`)).status).to.equal(404);
    });
  });

  describe("cluster: Redis that keeps its data (shared by the tests below)", function () {
    this.timeout(40_000);
    let redis: DurableRedis | undefined;
    let instances: InstanceProcess[] = [];
    // Registered before anything can fail.
    after(async function () {
      this.timeout(20_000);
      await Promise.all(instances.map((i) => i.stop(1_000)));
      await redis?.remove();
    });
    before(async function () {
      this.timeout(40_000);
      redis = await startDurableRedis();
      instances = await startInstancesOn(redis.url, 2, { RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    });
    const ws1 = () => instances[0]!;
    const ws2 = () => instances[1]!;

    /** Waits until every instance has logged that both its Redis connections are back, after the log indexes in `marks`. */
    const redisBack = (marks: number[]) =>
      Promise.all(
        instances.flatMap((inst, i) => ["pub", "sub"].map((role) => logAfter(inst, marks[i]!, (r) => r.msg.startsWith("redis is back") && r.role === role))),
      );
    const marks = () => instances.map((i) => i.logs.length);

    it("recovers on ANY instance: the boundary holds while a client hops between ws1 and ws2 under nonstop publishing", async () => {
      const sender = await io(ws2().url, { clientId: "publisher" });
      const p = new NumberedPublisher(sender.socket);
      defer(() => p.stop().catch(() => undefined));
      const r = resumingIo(ws1().url);
      const w = resumingWs();
      await r.connect();
      await w.connect(wsBase(ws1().url));
      p.start();
      let on = 0;
      for (const [stay, away] of [
        [5, 0],
        [0, 20],
        [30, 1],
        [1, 60],
        [0, 0],
        [10, 3],
      ] as const) {
        await p.more(stay);
        r.socket.disconnect();
        w.close();
        await w.closed;
        await p.more(away);
        on = 1 - on;
        r.moveTo(instances[on]!.url);
        const [rw, ww] = await Promise.all([r.connect(), w.connect(wsBase(instances[on]!.url))]);
        expect(rw, `Socket.IO welcome`).to.include({ recovered: true, instance: instances[on]!.id });
        expect(ww, `/ws welcome`).to.include({ recovered: true, instance: instances[on]!.id });
      }
      await p.more(20);
      const last = await p.stop();
      await sender.socket.emitWithAck("message", "end");
      await Promise.all([r.message("end"), w.message("end")]);
      expectEveryNumberOnce(r, last, "Socket.IO receiver");
      expectEveryNumberOnce(w, last, "/ws receiver");
    });

    it("a Redis restart that keeps the data keeps the epoch: a client away across it recovers everything", async () => {
      const r = resumingIo(ws1().url);
      const first = await r.connect();
      const other = await io(ws2().url, { clientId: "other-keep" });
      await publish(ws2().url, other, ["k1"]);
      await r.message("k1");
      r.socket.disconnect();
      const before = await publish(ws2().url, other, ["k2", "http:k3"]);

      const m = marks();
      await redis!.restart({ keepData: true });
      await redisBack(m);
      const after = await publish(ws1().url, other, ["http:k4"]);

      r.moveTo(ws2().url);
      const back = await r.connect();
      expect(back).to.include({ recovered: true, replayed: 3, epoch: first.epoch, instance: "ws2" });
      const [k5] = await publish(ws2().url, other, ["k5"]);
      await r.message("k5");
      expect(shape(r.since(1))).to.deep.equal(["welcome", ...shapeOf([...before, ...after, k5!])]);
    });

    it("a Redis outage leaves a gap: what ws1 delivered alone reaches ws1's clients only, and an offset from before it recovers with recovered: false", async () => {
      const a = await io(ws1().url, { clientId: "a-gap" });
      const b = await io(ws2().url, { clientId: "b-gap" });
      const r = resumingIo(ws1().url);
      await r.connect();
      await publish(ws1().url, a, ["g1"]);
      await r.message("g1");
      const beforeOutage = r.offset!;
      r.close();
      await b.next("message", (m: ChatMessage) => m.text === "g1");

      const down = marks();
      // If this test fails while Redis is down, the next ones still get a Redis.
      defer(() => redis!.running || redis!.start({ keepData: true }));
      await redis!.stop();
      await Promise.all(instances.map((inst, i) => logAfter(inst, down[i]!, (rec) => rec.msg.startsWith("redis unreachable"))));
      expect(await a.socket.emitWithAck("message", "during outage")).to.deep.equal({ ok: true });
      const during = await a.next<ChatMessage>("message", (msg) => msg.text === "during outage");
      expect(during, "delivered by ws1 alone, outside the history").not.to.have.property("offset");

      const up = marks();
      await redis!.start({ keepData: true });
      await redisBack(up);
      // After the outage: cross-instance delivery is back, and b never saw the outage message.
      await publish(ws1().url, a, ["g2"]);
      await b.next("message", (m: ChatMessage) => m.text === "g2");
      expect(b.inbox.all((e) => e.event === "message").map((e) => (e.args[0] as ChatMessage).text)).to.deep.equal(["g1", "g2"]);

      // Back with the offset from before the outage, on either instance: something may be missing.
      const late = resumingIo(ws2().url);
      const first = (await history(ws1().url)).epoch;
      late.epoch = first;
      late.offset = beforeOutage;
      const back = await late.connect();
      expect(back, `welcome after the gap (offset ${beforeOutage})`).to.include({ recovered: false, epoch: first });

      // A client whose offset is after the gap recovers fully.
      const fresh = resumingIo(ws1().url);
      await fresh.connect();
      fresh.socket.disconnect();
      await publish(ws1().url, a, ["g3"]);
      fresh.moveTo(ws2().url);
      expect(await fresh.connect()).to.include({ recovered: true, replayed: 1 });
      await fresh.message("g3");
    });

    it("a Redis restart that loses the data (no persistence) makes a new epoch: the old epoch gets recovered: false; the new one recovers", async () => {
      const r = resumingIo(ws1().url);
      const first = await r.connect();
      const other = await io(ws2().url, { clientId: "other-lose" });
      await publish(ws2().url, other, ["l1"]);
      await r.message("l1");
      r.socket.disconnect();
      await publish(ws2().url, other, ["l2"]);

      const m = marks();
      await redis!.restart({ keepData: false });
      await redisBack(m);
      await publish(ws1().url, other, ["http:l3"]);

      r.moveTo(ws2().url);
      const back = await r.connect();
      expect(back).to.include({ recovered: false });
      expect(back.epoch).to.be.a("string").and.not.equal(first.epoch);
      // The new epoch works: away again, back with it, everything recovered.
      r.socket.disconnect();
      const missed = await publish(ws2().url, other, ["l4"]);
      r.moveTo(ws1().url);
      expect(await r.connect()).to.include({ recovered: true, replayed: 1, epoch: back.epoch });
      await r.message("l4");
      expect(shape(r.since(2))).to.deep.equal(["welcome", ...shapeOf(missed)]);
    });
  });

  describe("cluster: history trimmed by time in Redis", function () {
    this.timeout(40_000);

    it("HISTORY_TTL_SEC: an offset whose successors expired from the stream gets recovered: false", async () => {
      const c = await startCluster(1, { HISTORY_TTL_SEC: "0.5", RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      defer(() => c.stop());
      const url = c.instances[0]!.url;
      const r = resumingIo(url);
      await r.connect();
      const other = await io(url, { clientId: "other-ttl" });
      await publish(url, other, ["t0"]);
      await r.message("t0");
      const away = r.offset!;
      r.socket.disconnect();
      // Enough entries to fill whole stream nodes (Redis trims approximately, a node at a time).
      const pad = "x".repeat(300);
      const missed = await publish(
        url,
        other,
        Array.from({ length: 40 }, (_, i) => `t${i + 1} ${pad}`),
      );
      // Each publish trims what is older than the TTL; publish until t1, the first thing the client missed, is gone.
      let tick = 0;
      await poll(
        async () => {
          await httpBroadcast(url, `tick ${++tick}`);
          const h = await history(url);
          return h.entries.length > 0 && h.entries.every((e) => e.data.text !== missed[0]!.text);
        },
        { timeoutMs: 15_000, everyMs: 100, what: "t1 to be trimmed from the stream" },
      );
      const left = (await history(url, away)).entries.length;
      const back = await r.connect();
      expect(back, `reconnected with ${away}; ${left} entries after it are left of the ${40 + tick} published since`).to.include({ recovered: false });
    });
  });

  describe("cluster: more missed than HISTORY_SIZE in Redis", function () {
    this.timeout(40_000);

    it("HISTORY_SIZE=3, 10 missed: recovered: false, and what it gets runs without a hole into live (in order, once)", async () => {
      const c = await startCluster(1, { HISTORY_SIZE: "3", RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      defer(() => c.stop());
      const url = c.instances[0]!.url;
      const r = resumingIo(url);
      await r.connect();
      const other = await io(url, { clientId: "other-size" });
      await publish(url, other, ["m0"]);
      await r.message("m0");
      r.socket.disconnect();
      const missed = await publish(
        url,
        other,
        Array.from({ length: 10 }, (_, i) => `m${i + 1}`),
      );
      const back = await r.connect();
      expect(back).to.include({ recovered: false });
      const [m11] = await publish(url, other, ["m11"]);
      await r.message("m11");
      // At most HISTORY_SIZE replayed: the newest of what was missed, then live, with no hole in between.
      expect(back.replayed).to.be.within(1, 3);
      const all = shapeOf([...missed, m11!]);
      expect(shape(r.since(1)).slice(1)).to.deep.equal(all.slice(all.length - back.replayed - 1));
    });
  });

  describe("cluster: moving off a drained, then a crashed instance", function () {
    this.timeout(60_000);

    it("a client with auth as a function (reconnection on) and a /ws client get every number exactly once, recovered: true each time", async () => {
      const c = await startCluster(3, { RATE_LIMIT_MESSAGES_PER_SEC: "0", FORCED_SHUTDOWN_AFTER_SEC: "0.5", DRAIN_CLOSE_SPREAD_SEC: "0.2" });
      defer(() => c.stop());
      const [ws1, ws2, ws3] = c.instances as [InstanceProcess, InstanceProcess, InstanceProcess];
      const sender = await io(ws3.url, { clientId: "publisher" });
      const p = new NumberedPublisher(sender.socket);
      defer(() => p.stop().catch(() => undefined));
      const r = resumingIo(ws1.url, { reconnection: true });
      const w = resumingWs();
      expect(await r.connect()).to.include({ instance: "ws1" });
      expect(await w.connect(wsBase(ws1.url))).to.include({ instance: "ws1" });
      p.start();
      await p.more(30);

      // Drain: told, then closed at the deadline; socket.io-client reconnects by itself (nginx would send it to a live instance: ws2).
      r.moveTo(ws2.url);
      const drained = r.nextDisconnect();
      ws1.signal("SIGTERM");
      const draining = (await r.inbox.next((e) => e.event === "notification" && e.data.type === "draining")).data;
      expect(draining).to.include({ instance: "ws1" }).and.not.to.have.property("offset");
      expect(await drained).to.equal("transport close");
      expect(await r.welcome(10_000)).to.include({ instance: "ws2", recovered: true });
      expect((await w.closed).code).to.equal(1001);
      expect(await w.connect(wsBase(ws2.url))).to.include({ instance: "ws2", recovered: true });
      expect(await ws1.exited).to.deep.equal({ code: 0, signal: null });
      await p.more(30);

      // Crash: no drain, no goodbye; no clientId, so no lease to wait for.
      r.moveTo(ws3.url);
      const crashed = r.nextDisconnect();
      ws2.signal("SIGKILL");
      expect(await crashed).to.equal("transport close");
      expect(await r.welcome(10_000)).to.include({ instance: "ws3", recovered: true });
      await w.closed;
      expect(await w.connect(wsBase(ws3.url))).to.include({ instance: "ws3", recovered: true });
      await p.more(30);

      const last = await p.stop();
      await sender.socket.emitWithAck("message", "end");
      await Promise.all([r.message("end", 10_000), w.message("end", 10_000)]);
      expectEveryNumberOnce(r, last, "Socket.IO client");
      expectEveryNumberOnce(w, last, "/ws client");
      expect(r.welcomes.map((x) => [x.instance, x.recovered])).to.deep.equal([
        ["ws1", false],
        ["ws2", true],
        ["ws3", true],
      ]);
    });
  });
});
