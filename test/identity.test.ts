import { expect } from "chai";
import fc from "fast-check";
import { type Stack, startStack } from "../harness/stack.js";
import { poll } from "../harness/waiting.js";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type IoClient, ioRefusal, type WsClient, wsRefusal } from "./helpers/clients.js";
import { hmacKey, signJwt } from "./helpers/jwt.js";

const SECRET = "identity-secret-of-at-least-32-bytes-0123";
type Wbs = { read?: string[]; send?: string[]; broadcast?: boolean };
const token = (sub: string, wbs?: Wbs, exp?: number) =>
  signJwt(hmacKey(SECRET), "HS256", { sub, ...(wbs ? { wbs } : {}), ...(exp !== undefined ? { exp } : {}) });
const inSec = (s: number) => Math.floor(Date.now() / 1000) + s;

const post = (url: string, body: unknown, adminToken?: string) =>
  fetch(`${url}/broadcast-to-all`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(adminToken ? { authorization: `Bearer ${adminToken}` } : {}) },
    body: JSON.stringify(body),
  });
const admin = (url: string, path: string, init: RequestInit = {}, adminToken?: string) =>
  fetch(`${url}${path}`, {
    ...init,
    headers: { "content-type": "application/json", ...(adminToken ? { authorization: `Bearer ${adminToken}` } : {}), ...(init.headers ?? {}) },
  });

/** The texts of the messages a Socket.IO client has received so far. */
const ioTexts = (c: IoClient) => c.inbox.all((e) => e.event === "message").map((e) => (e.args[0] as { text: string }).text);
describe("users, personal rooms and permissions", function () {
  this.timeout(30_000);
  const defer = useCleanup();

  const io = async (url: string, opts: Parameters<typeof connectIo>[1]): Promise<IoClient> => {
    const c = await connectIo(url, opts);
    defer(() => c.close());
    return c;
  };
  const ws = async (url: string, options: Parameters<typeof connectWs>[1] = {}): Promise<WsClient> => {
    const c = await connectWs(url, options);
    defer(() => c.close());
    return c;
  };
  /** Connects with `token` as soon as the server lets it in (a block ends, a place is given back). */
  const admittedSoon = async (url: string, token: string, what: string): Promise<IoClient> => {
    const c = await poll(() => connectIo(url, { auth: { token } }).catch(() => undefined), { timeoutMs: 10_000, everyMs: 100, what });
    defer(() => c.close());
    return c;
  };

  describe("one instance with client tokens", () => {
    let t: TestApp;
    before(async () => {
      t = await startApp({ AUTH_JWT_SECRET: SECRET, TOKEN_REFRESH_AHEAD_SEC: "1", TOKEN_EXPIRY_GRACE_SEC: "0.3" });
    });
    after(async () => {
      await t?.close();
    });

    it("two tabs of one user both connect and both get the personal room's messages", async () => {
      const alice = await token("alice");
      const tab1 = await io(t.url, { auth: { token: alice } });
      const tab2 = await io(t.url, { auth: { token: alice }, transports: ["polling"] });
      const line = await ws(`${t.wsUrl}/ws?format=json&token=${alice}`);
      const bob = await io(t.url, { auth: { token: await token("bob") } });
      const w1 = await tab1.next("welcome");
      const w2 = await tab2.next("welcome");
      const w3 = await line.nextJson("welcome");
      expect([w1.user, w2.user, w3.user]).to.deep.equal(["alice", "alice", "alice"]);
      expect(new Set([w1.clientId, w2.clientId, w3.clientId]).size, "a clientId a connection").to.equal(3);
      await bob.next("welcome");
      const res = await post(t.url, { message: "for alice only", room: "user:alice" });
      expect(await res.json(), "three connections reached").to.deep.equal({ sent: 3, partial: false });
      for (const c of [tab1, tab2]) expect(await c.next("message")).to.include({ text: "for alice only", room: "user:alice" });
      expect(await line.nextJson("message")).to.include({ text: "for alice only", room: "user:alice" });
      await post(t.url, { message: "sentinel" });
      await bob.next("message", (m) => m.text === "sentinel");
      expect(ioTexts(bob), "bob got nothing of alice's room").to.deep.equal(["sentinel"]);
      const listed = (await (await fetch(`${t.url}/users/alice/connections`)).json()) as { connections: { clientId: string; transport: string }[] };
      expect(listed.connections.map((c) => c.clientId).sort()).to.deep.equal([w1.clientId, w2.clientId, w3.clientId].sort());
    });

    it("joins only rooms the token may read, by name or prefix; a forbidden join says FORBIDDEN", async () => {
      const c = await io(t.url, { auth: { token: await token("carol", { read: ["lobby", "team:42:*"] }) } });
      await c.next("welcome");
      expect(await c.socket.emitWithAck("join", "lobby")).to.deep.equal({ ok: true, room: "lobby" });
      expect(await c.socket.emitWithAck("join", "team:42:ops")).to.deep.equal({ ok: true, room: "team:42:ops" });
      for (const room of ["team:43:ops", "team:42", "lobby2", "user:dave"]) {
        expect(await c.socket.emitWithAck("join", room), room).to.include({ ok: false, code: "FORBIDDEN" });
      }
      const line = await ws(`${t.wsUrl}/ws?format=json&token=${await token("carol", { read: ["lobby"] })}`);
      await line.nextJson("welcome");
      line.ws.send(JSON.stringify({ type: "join", room: "lobby", id: 1 }));
      expect(JSON.parse(await line.next((f) => f.includes('"id":1')))).to.deep.equal({ type: "ack", id: 1, data: { ok: true, room: "lobby" } });
      line.ws.send(JSON.stringify({ type: "join", room: "secret", id: "j2" }));
      const refused = JSON.parse(await line.next((f) => f.includes('"j2"')));
      expect(refused).to.deep.include({ type: "error", id: "j2" });
      expect(refused.data.code).to.equal("FORBIDDEN");
      // Both connections are served on.
      await post(t.url, { message: "in the lobby", room: "lobby" });
      await c.next("message", (m) => m.text === "in the lobby");
      expect(await line.nextJson("message")).to.include({ text: "in the lobby" });
    });

    it("a forbidden send is refused and delivered to no one", async () => {
      const reader = await io(t.url, { auth: { token: await token("erin", { read: ["news"] }), rooms: ["news"] } });
      await reader.next("welcome");
      const sender = await io(t.url, { auth: { token: await token("frank", { read: ["news"] }) } });
      await sender.next("welcome");
      expect(await sender.socket.emitWithAck("message", { text: "forged news", room: "news" })).to.include({ ok: false, code: "FORBIDDEN" });
      expect(await sender.socket.emitWithAck("message", "to everyone")).to.include({ ok: false, code: "FORBIDDEN" });
      const line = await ws(`${t.wsUrl}/ws?format=json&token=${await token("frank")}`);
      await line.nextJson("welcome");
      line.ws.send(JSON.stringify({ text: "forged over ws", room: "news", id: 7 }));
      expect((await line.nextJson("error", () => true)).code).to.equal("FORBIDDEN");
      line.ws.send("plain text to everyone");
      expect((await line.nextJson("error", () => true)).code).to.equal("FORBIDDEN");
      const editor = await io(t.url, { auth: { token: await token("gina", { send: ["news"] }) } });
      await editor.next("welcome");
      expect(await editor.socket.emitWithAck("message", { text: "sentinel", room: "news" })).to.deep.equal({ ok: true });
      await reader.next("message", (m) => m.text === "sentinel");
      expect(ioTexts(reader), "only the permitted send arrived").to.deep.equal(["sentinel"]);
    });

    it("recovery joins only permitted rooms and replays only their entries", async () => {
      const grants = { read: ["open:*"] };
      const first = await io(t.url, { auth: { token: await token("hank", grants), rooms: ["open:1", "closed:1"] } });
      const welcome = await first.next("welcome");
      expect(welcome.rooms, "the forbidden room is not joined").to.deep.equal(["open:1"]);
      first.close();
      await post(t.url, { message: "missed in closed", room: "closed:1" });
      await post(t.url, { message: "missed in open", room: "open:1" });
      await post(t.url, { message: "missed by all", room: "user:other" });
      await post(t.url, { message: "missed everywhere" });
      const again = await io(t.url, {
        auth: { token: await token("hank", grants), rooms: ["open:1", "closed:1", "user:other"], epoch: welcome.epoch, offset: welcome.offset },
      });
      const w = await again.next("welcome");
      expect(w).to.include({ recovered: true, replayed: 2 });
      await again.next("message", (m) => m.text === "missed everywhere");
      expect(ioTexts(again)).to.deep.equal(["missed in open", "missed everywhere"]);
    });

    it("/ws recovers its rooms with ?rooms= and ?since=, only those it may read", async () => {
      const grants = { read: ["open:*"] };
      const first = await ws(`${t.wsUrl}/ws?format=json&rooms=open:2,closed:2&token=${await token("ines", grants)}`);
      const welcome = await first.nextJson("welcome");
      expect(welcome.rooms).to.deep.equal(["open:2"]);
      first.ws.close();
      await post(t.url, { message: "ws missed in closed", room: "closed:2" });
      await post(t.url, { message: "ws missed in open", room: "open:2" });
      await post(t.url, { message: "ws missed by ines's own room", room: "user:ines" });
      const again = await ws(
        `${t.wsUrl}/ws?format=json&rooms=open:2,closed:2&since=${welcome.offset}&epoch=${welcome.epoch}&token=${await token("ines", grants)}`,
      );
      expect(await again.nextJson("welcome")).to.include({ recovered: true, replayed: 2 });
      const replayed = [await again.nextJson("message"), await again.nextJson("message")].map((m: { text: string }) => m.text);
      expect(replayed).to.deep.equal(["ws missed in open", "ws missed by ines's own room"]);
    });

    it("a personal room is never joined by name, and a token's claims are checked", async () => {
      const c = await io(t.url, { auth: { token: await token("ivy", { read: ["*"] }) } });
      await c.next("welcome");
      expect(await c.socket.emitWithAck("join", "user:jack"), "another's personal room").to.include({ ok: false, code: "FORBIDDEN" });
      expect(await c.socket.emitWithAck("join", "user:ivy"), "its own: already in it").to.deep.equal({ ok: true, room: "user:ivy" });
      for (const wbs of [
        "read everything",
        { read: "lobby" },
        { read: [42] },
        { read: ["has space"] },
        { read: ["a*b"] },
        { read: Array.from({ length: 65 }, (_, i) => `r${i}`) },
        { send: [{}] },
        { broadcast: "yes" },
      ]) {
        const err = await ioRefusal(t.url, { auth: { token: await signJwt(hmacKey(SECRET), "HS256", { sub: "kim", wbs }) } });
        expect(err.data?.code, JSON.stringify(wbs).slice(0, 60)).to.equal("UNAUTHORIZED");
        expect(err.message).to.match(/wbs/);
      }
    });

    it("a token that expires without refresh closes the connection at the deadline, with a reason", async () => {
      const c = await io(t.url, { auth: { token: await token("lena", undefined, inSec(2)) } });
      await c.next("welcome");
      const notice = await c.next("expiring", undefined, 5_000);
      expect(notice.closesInMs).to.be.within(0, 2_500);
      const closing = await c.next("closing", undefined, 5_000);
      expect(closing.code).to.equal("TOKEN_EXPIRED");
      await poll(() => !c.socket.connected, { timeoutMs: 5_000, what: "the expired connection closed" });
      const line = await ws(`${t.wsUrl}/ws?format=json&token=${await token("lena", undefined, inSec(2))}`);
      await line.nextJson("welcome");
      await line.nextJson("expiring", undefined, 5_000);
      const { code } = await line.closed;
      expect(code, "the /ws close code of TOKEN_EXPIRED").to.equal(4001);
    });

    it("a token refreshed in time keeps the connection, without a reconnect or a lost message", async () => {
      const writer = await io(t.url, { auth: { token: await token("writer", { broadcast: true }) } });
      await writer.next("welcome");
      const firstExp = inSec(2);
      const c = await io(t.url, { auth: { token: await token("mona", { read: ["keep", "drop"] }, firstExp), rooms: ["keep", "drop"] } });
      await c.next("welcome");
      const id = c.socket.id;
      let sent = 0;
      // Under the per-connection limit (20 a second).
      const publisher = setInterval(() => void writer.socket.emit("message", `n:${++sent}`), 70);
      defer(() => clearInterval(publisher));
      await c.next("expiring", undefined, 5_000);
      const answer = await c.socket.emitWithAck("refresh", await token("mona", { read: ["keep"] }, inSec(60)));
      expect(answer.ok, JSON.stringify(answer)).to.equal(true);
      expect(await c.next("left")).to.include({ room: "drop", code: "FORBIDDEN" });
      // Past the first token's deadline and grace (0.3 s), with messages all along.
      await poll(() => Date.now() > firstExp * 1000 + 800, { timeoutMs: 10_000, everyMs: 50, what: "past the old deadline" });
      clearInterval(publisher);
      await writer.socket.emitWithAck("message", "sentinel");
      await c.next("message", (m) => m.text === "sentinel");
      expect(c.socket.id, "the same socket: no reconnect").to.equal(id);
      expect(c.inbox.all((e) => e.event === "closing")).to.deep.equal([]);
      const numbers = ioTexts(c).filter((x) => x.startsWith("n:"));
      expect(numbers, "every message, once, in order").to.deep.equal(Array.from({ length: sent }, (_, i) => `n:${i + 1}`));
      await post(t.url, { message: "to the dropped room", room: "drop" });
      await writer.socket.emitWithAck("message", "sentinel 2");
      await c.next("message", (m) => m.text === "sentinel 2");
      expect(ioTexts(c)).to.not.include("to the dropped room");
    });

    it("a refresh for another user, or with a bad token, is refused and the connection goes on", async () => {
      const c = await io(t.url, { auth: { token: await token("nina") } });
      await c.next("welcome");
      const forged = await signJwt(hmacKey(`${SECRET}-not`), "HS256", { sub: "nina" });
      const expired = await token("nina", undefined, inSec(-60));
      const cases: [unknown, string][] = [
        [await token("oscar"), "UNAUTHORIZED"],
        [forged, "UNAUTHORIZED"],
        [expired, "TOKEN_EXPIRED"],
        [42, "UNAUTHORIZED"],
        ["", "UNAUTHORIZED"],
      ];
      for (const [fresh, code] of cases)
        expect(await c.socket.emitWithAck("refresh", fresh as string), String(fresh).slice(0, 20)).to.include({ ok: false, code });
      expect((await c.socket.emitWithAck("join", "user:nina")).ok).to.equal(true);
      await post(t.url, { message: "still here", room: "user:nina" });
      await c.next("message", (m) => m.text === "still here");
    });
  });

  describe("one instance without tokens", () => {
    let t: TestApp;
    before(async () => {
      t = await startApp({});
    });
    after(async () => {
      await t?.close();
    });

    it("rooms are open; each connection is its own user, reached by its personal room", async () => {
      const a = await io(t.url, { clientId: "plain-a" });
      const w = await a.next("welcome");
      expect(w.user).to.equal("plain-a");
      expect(await a.socket.emitWithAck("join", "anything")).to.deep.equal({ ok: true, room: "anything" });
      expect(await a.socket.emitWithAck("join", "user:plain-b")).to.include({ ok: false, code: "FORBIDDEN" });
      expect(await a.socket.emitWithAck("message", { text: "dm", room: "user:plain-b" }), "a personal room takes a grant").to.include({
        ok: false,
        code: "FORBIDDEN",
      });
      const line = await ws(`${t.wsUrl}/ws?format=json`);
      line.ws.send(JSON.stringify({ type: "join", room: "anything", id: 1 }));
      await line.next((f) => f.includes('"type":"ack"'));
      await post(t.url, { message: "to plain-a", room: "user:plain-a" });
      await a.next("message", (m) => m.text === "to plain-a");
      await a.socket.emitWithAck("message", { text: "room talk", room: "anything" });
      expect(await line.nextJson("message", (m: { text: string }) => m.text === "room talk")).to.include({ room: "anything" });
    });
  });

  describe("a property: no connection receives an entry of a room it may not read, live or replayed", () => {
    let t: TestApp;
    before(async () => {
      t = await startApp({ AUTH_JWT_SECRET: SECRET, RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    });
    after(async () => {
      await t?.close();
    });

    const ROOMS = ["a", "b", "team:1", "team:2", "user:u0", "user:u1", "user:u2"];
    const PATTERNS = ["a", "b", "team:*", "team:1", "*", "user:*"];
    const grants = fc.record({
      read: fc.subarray(PATTERNS),
      send: fc.subarray(PATTERNS),
      broadcast: fc.boolean(),
    });
    const step = fc.oneof(
      fc.record({ kind: fc.constant("join" as const), who: fc.nat(2), room: fc.constantFrom(...ROOMS) }),
      fc.record({ kind: fc.constant("send" as const), who: fc.nat(2), room: fc.option(fc.constantFrom(...ROOMS), { nil: undefined }) }),
      fc.record({ kind: fc.constant("reconnect" as const), who: fc.nat(2), room: fc.constant(undefined) }),
    );
    const prefix = (p: string, room: string) => (p.endsWith("*") ? room.startsWith(p.slice(0, -1)) : p === room);
    const mayRead = (user: string, g: { read: string[] }, room: string) =>
      room === `user:${user}` || (!room.startsWith("user:") && g.read.some((p) => prefix(p, room)));

    it("holds over random claims, joins, sends and reconnects", async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.tuple(grants, grants, grants), fc.array(step, { minLength: 5, maxLength: 25 }), async (gs, steps) => {
          run++;
          const users = gs.map((_, i) => `u${i}`);
          const tokens = await Promise.all(gs.map((g, i) => token(users[i]!, g)));
          const clients: IoClient[] = [];
          const places: { epoch: string; offset: string }[] = [];
          const connect = async (i: number, resume?: { epoch: string; offset: string }, rooms: string[] = []) => {
            const c = await connectIo(t.url, { auth: { token: tokens[i], rooms, ...(resume ?? {}) } });
            const w = await c.next("welcome");
            places[i] = { epoch: w.epoch, offset: w.offset };
            c.socket.on("message", (m: { offset?: string }) => {
              if (m.offset) places[i] = { epoch: w.epoch, offset: m.offset };
            });
            return c;
          };
          for (let i = 0; i < 3; i++) clients[i] = await connect(i);
          const everyone: { c: IoClient; who: number }[] = clients.map((c, who) => ({ c, who }));
          try {
            for (const [k, s] of steps.entries()) {
              const c = clients[s.who]!;
              if (s.kind === "join") await c.socket.emitWithAck("join", s.room);
              else if (s.kind === "send") await c.socket.emitWithAck("message", { text: `r${run}s${k}`, ...(s.room ? { room: s.room } : {}) });
              else {
                // Away while the others send: it comes back with every room it asks for, permitted or not.
                c.close();
                clients[s.who] = await connect(s.who, places[s.who], ROOMS);
                everyone.push({ c: clients[s.who]!, who: s.who });
              }
            }
            // A sentinel to everyone from an admin: once each has it, everything before it has arrived.
            await post(t.url, { message: `sentinel ${run}` });
            await Promise.all(clients.map((c) => c.next("message", (m) => m.text === `sentinel ${run}`)));
            for (const [n, { c, who }] of everyone.entries()) {
              for (const e of c.inbox.all((x) => x.event === "message")) {
                const m = e.args[0] as { room?: string; text: string };
                if (m.room === undefined) continue;
                expect(
                  mayRead(users[who]!, gs[who]!, m.room),
                  `connection ${n} of ${users[who]} (grants ${JSON.stringify(gs[who])}) got ${m.text} of ${m.room}`,
                ).to.equal(true);
              }
            }
          } finally {
            for (const { c } of everyone) c.close();
          }
        }),
        { numRuns: 25 },
      );
    });
  });

  describe("four instances behind nginx, one Redis", () => {
    let stack: Stack;
    before(async function () {
      this.timeout(90_000);
      stack = await startStack({ env: { PERIODIC_INTERVAL_SEC: "0", AUTH_JWT_SECRET: SECRET, MAX_CONNECTIONS_PER_USER: "3" } });
    });
    after(async function () {
      this.timeout(30_000);
      await stack?.stop({ graceMs: 2_000 });
    });

    it("a user's tabs on different instances all get its personal room; disconnect-user cuts every one and a block keeps it out", async () => {
      const pat = await token("pat");
      const tabs: IoClient[] = [];
      for (let i = 0; i < 3; i++) tabs.push(await io(stack.url, { auth: { token: pat } }));
      const where = await Promise.all(tabs.map(async (c) => (await c.next("welcome")).instance as string));
      console.log(`      pat's three tabs on ${where.join(", ")}`);
      const res = await post(stack.url, { message: "for pat", room: "user:pat" }, stack.adminToken);
      expect(await res.json()).to.deep.equal({ sent: 3, partial: false });
      for (const c of tabs) await c.next("message", (m) => m.text === "for pat");
      const listed = (await (await admin(stack.url, "/users/pat/connections", {}, stack.adminToken)).json()) as {
        connections: { instance: string; transport: string }[];
      };
      expect(listed.connections.map((c) => c.instance).sort()).to.deep.equal([...where].sort());

      const cut = await admin(
        stack.url,
        "/users/pat/disconnect",
        { method: "POST", body: JSON.stringify({ reason: "logged out", blockSec: 2 }) },
        stack.adminToken,
      );
      expect(await cut.json()).to.include({ disconnected: 3, partial: false });
      for (const c of tabs) {
        const closing = await c.next("closing");
        expect(closing).to.include({ code: "DISCONNECTED", error: "logged out" });
        await poll(() => !c.socket.connected, { timeoutMs: 5_000, what: "a tab closed" });
      }
      const refused = await ioRefusal(stack.url, { auth: { token: pat } });
      expect(refused.data?.code).to.equal("BLOCKED");
      const refusedWs = await wsRefusal(`${stack.url.replace(/^http/, "ws")}/ws?token=${pat}`);
      expect(refusedWs.status).to.equal(403);
      // Once the block ends, pat is let in again.
      const back = await admittedSoon(stack.url, pat, "pat let in after the block");
      expect((await back.next("welcome")).user).to.equal("pat");
    });

    it("a block outlives an instance's restart", async () => {
      const vic = await token("vic");
      const res = await admin(stack.url, "/users/vic/disconnect", { method: "POST", body: JSON.stringify({ blockSec: 60 }) }, stack.adminToken);
      expect(await res.json()).to.include({ disconnected: 0, blockStored: true });
      await stack.restartInstance(0);
      const refused = await ioRefusal(stack.instanceUrl(0), { auth: { token: vic } });
      expect(refused.data?.code, "the restarted instance read the block from Redis").to.equal("BLOCKED");
      expect((await admin(stack.url, "/users/vic/block", { method: "DELETE" }, stack.adminToken)).status).to.equal(200);
      await admittedSoon(stack.instanceUrl(0), vic, "vic let in once the block is lifted");
    });

    it("holds the per-user cap under racing connects across instances", async () => {
      const quinn = await token("quinn");
      const attempts = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) =>
          i % 2 === 0 ? connectIo(stack.url, { auth: { token: quinn } }) : connectWs(`${stack.url.replace(/^http/, "ws")}/ws?token=${quinn}`),
        ),
      );
      const opened = attempts.flatMap((a) => (a.status === "fulfilled" ? [a.value] : []));
      for (const c of opened) defer(() => c.close());
      const refused = attempts.flatMap((a) => (a.status === "rejected" ? [a.reason as { data?: { code?: string }; body?: string }] : []));
      expect(opened.length, "connections let in").to.equal(3);
      for (const r of refused) expect(r.data?.code ?? JSON.parse(r.body ?? "{}").code).to.equal("TOO_MANY_CONNECTIONS");
      // One leaves: one more gets in.
      opened[0]!.close();
      await admittedSoon(stack.url, quinn, "a place given back");
    });
  });

  describe("on the Redis Cluster", () => {
    let stack: Stack;
    before(async function () {
      this.timeout(120_000);
      stack = await startStack({ redisCluster: true, env: { PERIODIC_INTERVAL_SEC: "0", AUTH_JWT_SECRET: SECRET, MAX_CONNECTIONS_PER_USER: "2" } });
    });
    after(async function () {
      this.timeout(30_000);
      await stack?.stop({ graceMs: 2_000 });
    });

    it("a user's connections get its personal room, the cap holds, and disconnect-user reaches every instance", async () => {
      const rae = await token("rae");
      const tabs = await Promise.all([0, 1].map((i) => io(stack.instanceUrl(i), { auth: { token: rae } })));
      await Promise.all(tabs.map((c) => c.next("welcome")));
      const third = await ioRefusal(stack.instanceUrl(2), { auth: { token: rae } });
      expect(third.data?.code).to.equal("TOO_MANY_CONNECTIONS");
      await post(stack.url, { message: "for rae", room: "user:rae" }, stack.adminToken);
      for (const c of tabs) await c.next("message", (m) => m.text === "for rae");
      const cut = await admin(stack.url, "/users/rae/disconnect", { method: "POST", body: "{}" }, stack.adminToken);
      expect(await cut.json()).to.include({ disconnected: 2 });
      for (const c of tabs) await c.next("closing");
    });
  });
});
