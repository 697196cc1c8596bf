/**
 * Hostile input: what a client controls (the request target, the handshake
 * headers, the frames, the text) must never end the process, leak a clientId,
 * open a session on a draining instance, forge a line on another client's
 * terminal, or pass the origin check by naming itself in Host.
 *
 * The fuzz tests at the end print their seed; replay a failure with
 *   FUZZ_SEED=<seed> FUZZ_PATH=<path> npx mocha test/hostile-input.test.ts --grep "<test name>"
 * and scale them with FUZZ_RUNS (raw HTTP cases) and FUZZ_FRAME_RUNS (frame cases).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect } from "chai";
import fc from "fast-check";
import { freePort } from "../harness/ports.js";
import { poll } from "../harness/waiting.js";
import { REFUSED_UPGRADE_LINGER_MS } from "../server/realtime/reject.js";
import { type InstanceProcess, startInstance } from "../harness/instance.js";
import { type RedisProcess, startRedis } from "../harness/redis.js";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type WsClient } from "./helpers/clients.js";
import { type Cluster, startCluster } from "./helpers/cluster.js";
import { type FrameSpec, type HttpCase, type WsConnCase, frameBytes, frameCase, httpCase, httpCaseRequest } from "./helpers/fuzz-inputs.js";
import { type Holdings, holdings, settled, waitForHoldings } from "./helpers/metrics.js";
import { expectAlive, hasExited, lastOutput } from "./helpers/process.js";
import {
  RawConnection,
  type RawResponse,
  buildRequest,
  closeFrame,
  encodeFrame,
  jsonBody,
  rawExchange,
  type RequestSpec,
  upgradeHeaders,
} from "./helpers/raw-http.js";

const run = promisify(execFile);
const ws = (url: string) => url.replace(/^http/, "ws");
const portOf = (url: string) => Number(new URL(url).port);
const hostOf = (url: string) => new URL(url).host;
/** What a refused or answered request looked like, for assertion messages. */
const shown = (res: RawResponse) =>
  res.status === undefined
    ? `no status line (closed: ${res.closed}, error: ${res.error}, timed out: ${res.timedOut}, bytes: ${JSON.stringify(res.raw.toString("latin1").slice(0, 200))})`
    : `${res.statusLine} ${res.body.toString("utf8").slice(0, 200)}`;

/** The clientIds that hold a registry key (`wbs:client:{bucket}:<id>`) in the Redis on `port`. */
async function redisKeys(port: number): Promise<string[]> {
  const { stdout } = await run("redis-cli", ["-p", String(port), "--scan", "--pattern", "wbs:client:*"], { timeout: 5_000 });
  return stdout
    .split("\n")
    .filter(Boolean)
    .map((key) => key.replace(/^wbs:client:\{\d+\}:/, ""));
}

/** Polls (bounded) until `check` answers true. */
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("hostile input", function () {
  this.timeout(30_000);
  const defer = useCleanup();

  /** A real process, so that a crash shows as an exit rather than taking mocha down. */
  const instance = async (env: Record<string, string> = {}): Promise<InstanceProcess> => {
    const inst = await startInstance({ env: { PORT: String(await freePort()), INSTANCE_ID: "h1", PERIODIC_INTERVAL_SEC: "0", ...env } });
    defer(() => inst.stop(1_000));
    return inst;
  };
  const app = async (env: Record<string, string> = {}): Promise<TestApp> => {
    const t = await startApp(env);
    defer(() => t.close());
    return t;
  };
  const wsClient = async (url: string, opts: { origin?: string } = {}): Promise<WsClient> => {
    const c = await connectWs(url, opts);
    defer(() => c.close());
    return c;
  };

  describe("request targets the process cannot read", () => {
    it("answers /ws/{clientId} with malformed percent-encoding with 400 INVALID_CLIENT_ID before the upgrade, and stays up", async () => {
      const inst = await instance();
      const host = hostOf(inst.url);
      for (const path of ["/ws/%FF", "/ws/%ZZ", "/ws/%E0%A4%A"]) {
        const res = await rawExchange(inst.port, { target: path, headers: upgradeHeaders(host) });
        expect(res.status, `${path}: ${shown(res)}`).to.equal(400);
        const body = jsonBody(res);
        expect(body, `${path}: ${shown(res)}`)
          .to.be.an("object")
          .that.includes({ code: "INVALID_CLIENT_ID" });
        expect(body.error, path).to.be.a("string");
        await expectAlive(inst, `upgrade to ${path}`);
      }
      const c = await wsClient(`${ws(inst.url)}/ws/after-bad-ids`);
      expect(await c.next()).to.match(/^ Welcome! .* as after-bad-ids at /);
    });

    it("answers an upgrade whose target is unparsable (//[, http://[, *) with 400 or 404, and stays up", async () => {
      const inst = await instance();
      for (const target of ["//[", "http://[", "*"]) {
        const res = await rawExchange(inst.port, { target, headers: upgradeHeaders(hostOf(inst.url)) });
        expect(res.status, `GET ${target}: ${shown(res)}`).to.be.oneOf([400, 404]);
        await expectAlive(inst, `upgrade to ${target}`);
      }
      const c = await wsClient(`${ws(inst.url)}/ws`);
      expect(await c.next()).to.match(/Welcome!/);
    });
  });

  describe("a refused upgrade gives its socket back", () => {
    const openConnections = (t: TestApp) => new Promise<number>((resolve, reject) => t.app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

    it("frees the socket when the peer closes after the answer (sending more first, or not), for 400 and 404", async () => {
      const t = await app();
      const host = hostOf(t.url);
      const base = await openConnections(t);
      for (const target of ["/ws/%ZZ", "//ws", "/nowhere"]) {
        for (const sendMore of [false, true]) {
          for (let i = 0; i < 5; i++) {
            const c = await RawConnection.open(portOf(t.url));
            c.write(buildRequest({ target, headers: upgradeHeaders(host) }));
            const res = await c.response();
            expect(res.status, `${target}: ${shown(res)}`).to.be.oneOf([400, 404]);
            if (sendMore) c.write(encodeFrame({ opcode: 1, payload: "after the refusal", mask: true }));
            c.destroy();
          }
        }
      }
      await poll(async () => (await openConnections(t)) === base, { timeoutMs: 5_000, everyMs: 20, what: "the refused sockets to close" });
    });

    it("cuts a peer that never closes after the answer", async function () {
      this.timeout(REFUSED_UPGRADE_LINGER_MS + 10_000);
      const t = await app();
      const base = await openConnections(t);
      // Half-open: it reads our answer and our end, and keeps its own side open.
      const c = await RawConnection.open(portOf(t.url));
      defer(() => c.destroy());
      c.write(buildRequest({ target: "/ws/%ZZ", headers: upgradeHeaders(hostOf(t.url)) }));
      expect((await c.response()).status).to.equal(400);
      expect(await openConnections(t)).to.equal(base + 1);
      await poll(async () => (await openConnections(t)) === base, {
        timeoutMs: REFUSED_UPGRADE_LINGER_MS + 2_000,
        everyMs: 50,
        what: "the server to cut the lingering socket",
      });
    });
  });

  describe("a refused /ws/{clientId} duplicate", () => {
    // The duplicate is answered after the upgrade (an error frame, then close
    // 1008, as the old service B did); until the client's close arrives, what
    // it sends is still read, and a frame ws rejects must not end the process.
    it("survives the client's invalid frames (bad UTF-8, oversized, unmasked) before it closes", async () => {
      const inst = await instance({ MAX_MESSAGE_BYTES: "64" });
      const holder = await wsClient(`${ws(inst.url)}/ws/dup`);
      await holder.next();
      const bad: [string, Buffer][] = [
        ["a text frame with invalid UTF-8", encodeFrame({ opcode: 0x1, payload: Buffer.from([0x68, 0x69, 0xff]) })],
        ["a frame over MAX_MESSAGE_BYTES", encodeFrame({ opcode: 0x1, payload: "x".repeat(65) })],
        ["an unmasked frame", encodeFrame({ opcode: 0x1, payload: "hi", mask: false })],
      ];
      for (const [what, frame] of bad) {
        const conn = await RawConnection.open(inst.port);
        defer(() => conn.destroy());
        conn.write(buildRequest({ target: "/ws/dup", headers: upgradeHeaders(hostOf(inst.url)) }));
        expect((await conn.response()).status).to.equal(101);
        const refusal = await conn.frame();
        expect(JSON.parse(refusal?.payload.toString() ?? "null")).to.deep.equal({ type: "error", code: 1008, message: "Client dup is already connected" });
        conn.write(frame);
        // The server's close (1008, or the protocol error's code), then the end of the connection.
        await conn.readUntilClose(3_000);
        conn.destroy();
        await expectAlive(inst, `a duplicate /ws/dup that sent ${what}`);
      }
      holder.ws.send("still here");
      expect(await holder.next()).to.equal("Server echo: still here");
    });
  });

  describe("a clientId is claimed only once the WebSocket handshake succeeds", () => {
    /** Handshakes that ws refuses (400, 405, 426), each for `target`. */
    const badHandshakes = (host: string, target: string): [string, RequestSpec][] => {
      const base = upgradeHeaders(host);
      const without = (name: string) => base.filter(([k]) => k !== name);
      const replaced = (name: string, value: string) => base.map(([k, v]): [string, string] => [k, k === name ? value : v]);
      return [
        ["no Sec-WebSocket-Key", { target, headers: without("Sec-WebSocket-Key") }],
        ["a malformed Sec-WebSocket-Key", { target, headers: replaced("Sec-WebSocket-Key", "not-a-valid-key") }],
        ["Sec-WebSocket-Version: 99", { target, headers: replaced("Sec-WebSocket-Version", "99") }],
        ["method POST", { method: "POST", target, headers: [...base, ["Content-Length", "0"]] }],
        [
          "Upgrade: h2c",
          {
            target,
            headers: [
              ...replaced("Upgrade", "h2c").map(([k, v]): [string, string] => [k, k === "Connection" ? "Upgrade, HTTP2-Settings" : v]),
              ["HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"],
            ],
          },
        ],
      ];
    };

    /** Every bad handshake for /ws/alice and /ws gets a 4xx on `url`. */
    const refuseAll = async (url: string) => {
      for (const target of ["/ws/alice", "/ws"]) {
        for (const [what, spec] of badHandshakes(hostOf(url), target)) {
          const res = await rawExchange(portOf(url), spec);
          expect(res.status, `${target} with ${what}: ${shown(res)}`).to.be.within(400, 499);
        }
      }
    };

    /** alice connects on /ws/alice at `wsAt`, then, once gone, over Socket.IO at `ioAt`; the ids held follow the live connections. */
    const aliceIsFree = async (wsAt: string, ioAt: string) => {
      const line = await wsClient(`${ws(wsAt)}/ws/alice`);
      expect(await line.next(), "the first frame of /ws/alice after the failed handshakes").to.match(/^ Welcome! Connected to Instance \[\S+\] as alice at /);
      const during = await holdings(wsAt);
      expect(during.clientIds, `ids held while alice is connected: ${JSON.stringify(during)}`).to.equal(during.connections);
      expect(during.connections).to.equal(1);
      line.close();
      await line.closed;
      await waitForHoldings(wsAt, (h) => h.connections === 0 && h.clientIds === 0, "alice released after /ws/alice closed");
      const sio = await connectIo(ioAt, { clientId: "alice" });
      defer(() => sio.close());
      expect(await sio.next("welcome")).to.include({ clientId: "alice" });
    };

    it("on one instance: failed /ws/alice and /ws handshakes leave no id held, and alice connects afterwards", async () => {
      const t = await app();
      await refuseAll(t.url);
      const after = await holdings(t.url);
      expect(after.clientIds, `after the failed handshakes: ${JSON.stringify(after)}`).to.equal(0);
      expect(after.connections).to.equal(0);
      expect((await (await fetch(`${t.url}/clients`)).json()).clients).to.deep.equal([]);
      await aliceIsFree(t.url, t.url);
    });

    it("with Redis: failed handshakes leave no wbs:client key, and alice connects on either instance afterwards", async () => {
      const c: Cluster = await startCluster(2);
      defer(() => c.stop());
      const [ws1, ws2] = c.instances.map((i) => i.url) as [string, string];
      await refuseAll(ws1);
      expect(await redisKeys(c.redis.port), "wbs:client:* keys after the failed handshakes").to.deep.equal([]);
      const after = await holdings(ws1);
      expect(after.clientIds, `after the failed handshakes: ${JSON.stringify(after)}`).to.equal(0);
      // Another instance sees the id free (a phantom would be a Redis key it cannot take).
      await aliceIsFree(ws2, ws1);
      await eventually(async () => (await redisKeys(c.redis.port)).length === 1, "only the Socket.IO alice's key left");
      expect(await redisKeys(c.redis.port)).to.deep.equal(["alice"]);
    });
  });

  describe("a draining instance opens no new session, whatever the sid says", () => {
    it("answers 503 to polling and WebSocket handshakes with an empty sid, and no 200 to a sid whose last value is empty", async () => {
      const t = await app();
      const keeper = await connectIo(t.url, { clientId: "keeper" });
      defer(() => keeper.close());
      t.app.shutdown.begin("test");
      await keeper.next("notification", (n: { type: string }) => n.type === "draining");
      const port = portOf(t.url);
      const host = hostOf(t.url);

      const poll = await rawExchange(port, {
        target: "/socket.io/?EIO=4&transport=polling&sid=",
        headers: [
          ["Host", host],
          ["Connection", "close"],
        ],
      });
      expect(poll.status, shown(poll)).to.equal(503);
      expect(poll.headers["retry-after"]).to.equal("1");
      const upgrade = await rawExchange(port, { target: "/socket.io/?EIO=4&transport=websocket&sid=", headers: upgradeHeaders(host) });
      expect(upgrade.status, shown(upgrade)).to.equal(503);

      // Engine.IO reads the last value of a repeated sid: an empty last one would open a session.
      const repeatedPoll = await rawExchange(port, {
        target: "/socket.io/?EIO=4&transport=polling&sid=x&sid=",
        headers: [
          ["Host", host],
          ["Connection", "close"],
        ],
      });
      expect(repeatedPoll.status, shown(repeatedPoll)).to.be.oneOf([400, 503]);
      const repeatedUpgrade = await rawExchange(port, { target: "/socket.io/?EIO=4&transport=websocket&sid=x&sid=", headers: upgradeHeaders(host) });
      expect(repeatedUpgrade.status, shown(repeatedUpgrade)).to.be.oneOf([400, 503]);

      // The client it had keeps working.
      expect(await keeper.socket.emitWithAck("message", "still served")).to.include({ ok: true });
    });
  });

  describe("/ws text mode shows control characters escaped", () => {
    /** The text-mode rendering of a client's text: C0, DEL, C1, U+2028 and U+2029 escaped. */
    const visible = (text: string): string =>
      [...text]
        .map((ch) => {
          const c = ch.codePointAt(0)!;
          if (ch === "\n") return "\\n";
          if (ch === "\r") return "\\r";
          if (ch === "\t") return "\\t";
          if (c <= 0x1f || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029) return `\\u${c.toString(16).padStart(4, "0")}`;
          return ch;
        })
        .join("");

    it("renders a forged SYSTEM line as one line with a literal \\n; JSON mode and Socket.IO get the text as sent", async () => {
      const t = await app();
      const sender = await wsClient(`${t.wsUrl}/ws`);
      const reader = await wsClient(`${t.wsUrl}/ws`);
      const echoReader = await wsClient(`${t.wsUrl}/ws/bob`);
      const json = await wsClient(`${t.wsUrl}/ws?format=json`);
      const sio = await connectIo(t.url, { clientId: "sio" });
      defer(() => sio.close());
      const id = /as (\S+) at/.exec(await sender.next())![1]!;
      const forged = "hi\n[22:00:00] SYSTEM (ws1): fake";
      sender.ws.send(forged);
      sender.ws.send("sentinel");
      for (const c of [sender, reader, echoReader]) {
        await c.next((l) => l.endsWith("says: sentinel"));
        const lines = c.inbox.all((l) => !l.startsWith(" Welcome"));
        expect(lines, "frames received").to.deep.equal([
          `User ${id} (via test-1) says: hi\\n[22:00:00] SYSTEM (ws1): fake`,
          `User ${id} (via test-1) says: sentinel`,
        ]);
        for (const l of lines) expect(l).not.to.match(/[\r\n]/);
      }
      expect(await json.nextJson("message")).to.include({ text: forged, from: id });
      expect(await sio.next("message")).to.include({ text: forged, from: id });
    });

    it("escapes every control character, U+2028 and U+2029, and nothing else (property)", async () => {
      // A hundred messages from one connection in a few seconds: no rate limit here.
      const t = await app({ RATE_LIMIT_MESSAGES_PER_SEC: "0" });
      const sender = await wsClient(`${t.wsUrl}/ws`);
      const reader = await wsClient(`${t.wsUrl}/ws`);
      const json = await wsClient(`${t.wsUrl}/ws?format=json`);
      const id = /as (\S+) at/.exec(await sender.next())![1]!;
      const char = fc.oneof(
        fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)),
        fc.integer({ min: 0x7f, max: 0x9f }).map((c) => String.fromCharCode(c)),
        fc.constantFrom("\n", "\r", "\t", "\u2028", "\u2029", "[", "]", ":", " ", "a"),
        fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
      );
      // Backslashes are left out: how a literal one renders is not specified.
      const text = fc.string({ unit: char, minLength: 1, maxLength: 60 }).filter((s) => !s.includes("\\"));
      // Each run's text starts with its own tag, so a failed run leaves no frame for the next one to take.
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(text, async (s) => {
          const tag = `#${++runs} `;
          sender.ws.send(tag + s);
          const line = await reader.next((l) => l.startsWith(`User ${id} (via test-1) says: ${tag}`), 2_000);
          expect(line).to.equal(`User ${id} (via test-1) says: ${tag}${visible(s)}`);
          expect(line).not.to.match(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
          expect((await json.nextJson("message", (m: { text: string }) => m.text.startsWith(tag), 2_000)).text).to.equal(tag + s);
        }),
        {
          numRuns: Number(process.env.FUZZ_TEXT_RUNS ?? 100),
          seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
          verbose: process.env.FUZZ_VERBOSE ? 2 : 0,
        },
      );
    });
  });

  describe("origins are decided by configuration, not by the Host header", () => {
    /** Status of a /ws upgrade, a polling handshake and a Socket.IO WebSocket handshake with these headers. */
    const attempts = async (url: string, headers: [string, string][]) => {
      const port = portOf(url);
      const hostless = upgradeHeaders(hostOf(url)).filter(([k]) => k !== "Host");
      const hasHost = headers.some(([k]) => k === "Host");
      const withHost = hasHost ? headers : [["Host", hostOf(url)] as [string, string], ...headers];
      const wsRes = await rawExchange(port, { target: "/ws", headers: [...withHost, ...hostless] });
      const poll = await rawExchange(port, { target: "/socket.io/?EIO=4&transport=polling", headers: [...withHost, ["Connection", "close"]] });
      const sioWs = await rawExchange(port, { target: "/socket.io/?EIO=4&transport=websocket", headers: [...withHost, ...hostless] });
      return { ws: wsRes, poll, sioWs };
    };
    const expectRefused = (r: Awaited<ReturnType<typeof attempts>>, what: string) => {
      expect(r.ws.status, `/ws, ${what}: ${shown(r.ws)}`).to.equal(403);
      expect(jsonBody(r.ws), `/ws, ${what}`).to.include({ code: "ORIGIN_NOT_ALLOWED" });
      expect(r.poll.status, `polling handshake, ${what}: ${shown(r.poll)}`).to.be.within(400, 499);
      expect(r.sioWs.status, `Socket.IO WebSocket handshake, ${what}: ${shown(r.sioWs)}`).to.not.equal(101);
    };
    const expectAllowed = (r: Awaited<ReturnType<typeof attempts>>, what: string) => {
      expect(r.ws.status, `/ws, ${what}: ${shown(r.ws)}`).to.equal(101);
      expect(r.poll.status, `polling handshake, ${what}: ${shown(r.poll)}`).to.equal(200);
      expect(r.sioWs.status, `Socket.IO WebSocket handshake, ${what}: ${shown(r.sioWs)}`).to.equal(101);
    };

    it("by default refuses Origin http://evil.com even with Host evil.com, and allows loopback origins and no Origin", async () => {
      const t = await app();
      expectRefused(
        await attempts(t.url, [
          ["Host", "evil.com"],
          ["Origin", "http://evil.com"],
        ]),
        "Origin and Host evil.com",
      );
      expectRefused(await attempts(t.url, [["Origin", "http://evil.com"]]), "Origin evil.com");
      for (const origin of ["http://localhost:1234", "http://127.0.0.1:8080", "http://[::1]:3000"]) {
        expectAllowed(await attempts(t.url, [["Origin", origin]]), `Origin ${origin}`);
      }
      expectAllowed(await attempts(t.url, []), "no Origin");
      await waitForHoldings(t.url, (h) => (h.byTransport.ws ?? 0) === 0, "the accepted /ws upgrades gone");
    });

    it("with PUBLIC_ORIGINS allows exactly those and CORS_ORIGINS, and no longer loopback", async () => {
      const t = await app({ PUBLIC_ORIGINS: "https://chat.example.com", CORS_ORIGINS: "https://partner.example.org" });
      expectAllowed(
        await attempts(t.url, [
          ["Host", "chat.example.com"],
          ["Origin", "https://chat.example.com"],
        ]),
        "Origin https://chat.example.com behind its proxy",
      );
      expectAllowed(await attempts(t.url, [["Origin", "https://chat.example.com"]]), "Origin https://chat.example.com");
      expectAllowed(await attempts(t.url, [["Origin", "https://partner.example.org"]]), "Origin https://partner.example.org (CORS_ORIGINS)");
      expectAllowed(await attempts(t.url, []), "no Origin");
      for (const origin of [
        "http://localhost:1234",
        "http://127.0.0.1:8080",
        "http://[::1]:3000",
        "http://chat.example.com",
        "https://chat.example.com.evil.com",
      ]) {
        expectRefused(await attempts(t.url, [["Origin", origin]]), `Origin ${origin}`);
      }
      expectRefused(
        await attempts(t.url, [
          ["Host", "evil.com"],
          ["Origin", "http://evil.com"],
        ]),
        "Origin and Host evil.com",
      );
      // The same through real clients.
      const ok = await wsClient(`${t.wsUrl}/ws`, { origin: "https://chat.example.com" });
      expect(await ok.next()).to.match(/Welcome!/);
    });
  });
});

describe("fuzz: hostile requests and frames against one real instance process with Redis", function () {
  const MAX_MESSAGE_BYTES = 256;
  const RAW_RUNS = Number(process.env.FUZZ_RUNS ?? 1500);
  const FRAME_RUNS = Number(process.env.FUZZ_FRAME_RUNS ?? 300);
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const path = process.env.FUZZ_PATH;
  /** Time allowed for each property, shrinking included (a crash costs a restart per shrink step). */
  const TIME_LIMIT_MS = Number(process.env.FUZZ_TIME_LIMIT_MS ?? 60_000);
  this.timeout(TIME_LIMIT_MS * 2 + 60_000);

  let redis: RedisProcess | undefined;
  let inst: InstanceProcess | undefined;
  /** Every process this suite started (restarts included), all stopped in after(). */
  const started: InstanceProcess[] = [];
  /** The case still running when a property returns (interrupted at its time limit): awaited before anything is stopped. */
  let inFlight: Promise<unknown> = Promise.resolve();
  let port: number;
  let restarts = 0;
  const env = () => ({
    PORT: String(port),
    INSTANCE_ID: "fz1",
    REDIS_URL: redis!.url,
    MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
    PERIODIC_INTERVAL_SEC: "0",
  });

  before(async function () {
    this.timeout(60_000);
    redis = await startRedis();
    port = await freePort();
    inst = await startInstance({ env: env() });
    started.push(inst);
  });
  after(async function () {
    this.timeout(30_000);
    await inFlight;
    await Promise.all(started.map((i) => i.stop(1_000)));
    await redis?.stop();
  });

  /** The instance; a new one if a case killed the last (so each case, and each shrink step, meets a live one). */
  const live = async (): Promise<InstanceProcess> => {
    if (!inst || (await hasExited(inst))) {
      restarts++;
      // The dead process's ids would stay taken for their lease (6 s) and make
      // the next cases meet duplicates they did not cause: drop them, as expiry would.
      await run("redis-cli", ["-p", String(redis!.port), "FLUSHALL"], { timeout: 5_000 });
      inst = await startInstance({ env: env() });
      started.push(inst);
    }
    return inst;
  };

  const RFC_CLOSE_CODE = (code: number) => (code >= 1000 && code <= 1014 && ![1004, 1005, 1006].includes(code)) || (code >= 3000 && code <= 4999);

  /**
   * After a case: the process is up, no /ws connection is left, every clientId
   * held belongs to a live connection, and nothing was logged at error level.
   * Throws one message with everything that went wrong, and what was sent.
   */
  async function afterCase(i: InstanceProcess, mark: number, problems: string[], sent: string): Promise<Holdings | undefined> {
    let h: Holdings | undefined;
    if (!(await hasExited(i))) {
      try {
        h = await waitForHoldings(i.url, settled, "wbs_client_ids equal to the live connections and no /ws connection left", 3_000);
      } catch (err) {
        problems.push((err as Error).message);
      }
      const errors = i.logs.slice(mark).filter((r) => r.level === "error" || r.level === "fatal");
      if (errors.length > 0) problems.push(`logged at error level: ${errors.map((r) => JSON.stringify(r)).join("\n")}`);
    }
    // A process that is dying may still have answered, or just failed to: give its exit a moment to show.
    const exit = await Promise.race([i.exited, new Promise<undefined>((r) => setTimeout(r, problems.length > 0 ? 1_000 : 0))]);
    if (exit) {
      await new Promise((r) => setTimeout(r, 100)); // its last words may still be in the pipe
      problems.unshift(`the process exited ${JSON.stringify(exit)}:\n${lastOutput(i, 20)}`);
    }
    if (problems.length > 0) throw new Error(`${problems.join("\n")}\nsent: ${sent}`);
    return h;
  }

  const printable = (b: Buffer) => JSON.stringify(b.toString("utf8").slice(0, 600));
  const tally = (stats: Map<string, number>, key: string) => stats.set(key, (stats.get(key) ?? 0) + 1);
  const summary = (stats: Map<string, number>) =>
    [...stats.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `${k}×${n}`)
      .join(" ");

  /** Runs a property under the shared seed, time limit and replay path; prints a one-line summary. */
  async function check<T>(name: string, arb: fc.Arbitrary<T>, numRuns: number, predicate: (v: T) => Promise<void>, stats: Map<string, number>): Promise<void> {
    const started = Date.now();
    restarts = 0;
    const tracked = (v: T): Promise<void> => {
      const p = predicate(v);
      inFlight = p.catch(() => undefined);
      return p;
    };
    const details = await fc.check(fc.asyncProperty(arb, tracked), {
      numRuns,
      seed,
      path,
      endOnFailure: path !== undefined,
      plugins: [fc.interruptAfterTimeLimit(TIME_LIMIT_MS)],
    });
    await inFlight;
    console.log(
      `      ${name}: ${details.numRuns} case(s) in ${((Date.now() - started) / 1000).toFixed(1)} s, seed ${seed}${details.interrupted ? " (time limit reached)" : ""}${restarts ? `, ${restarts} restart(s)` : ""}: ${summary(stats)}`,
    );
    if (details.failed) {
      const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      throw new Error(`${fc.defaultReportMessage(details) ?? "property failed"}\n\nWhat went wrong with the counterexample:\n${cause}`);
    }
  }

  it("answers every raw HTTP request with a status (never 5xx) or a clean close, stays up, and leaks no clientId", async () => {
    const stats = new Map<string, number>();
    await check(
      "raw HTTP",
      httpCase,
      RAW_RUNS,
      async (c: HttpCase) => {
        const i = await live();
        const mark = i.logs.length;
        const spec = httpCaseRequest(c, `127.0.0.1:${i.port}`);
        const bytes = buildRequest(spec);
        const problems: string[] = [];
        const conn = await RawConnection.open(i.port).catch((err: Error) => {
          problems.push(`could not connect: ${err.message}`);
          return undefined;
        });
        if (conn) {
          try {
            conn.writeSplit(bytes, c.cuts);
            const res = await conn.response({ timeoutMs: 3_000, method: spec.method });
            tally(stats, res.status === undefined ? (res.raw.length === 0 && !res.timedOut ? "closed" : "garbage") : String(res.status));
            if (res.timedOut) problems.push(`no complete answer within 3 s: ${shown(res)}`);
            else if (res.status === undefined && res.raw.length > 0) problems.push(`answered something that is not an HTTP response: ${shown(res)}`);
            else if (res.status !== undefined && res.status >= 500) problems.push(`answered ${shown(res)}`);
            if (res.status === 101 && c.after101 !== "destroy") {
              if (c.after101 === "close") conn.write(closeFrame(1000));
              else conn.end();
              if (!(await conn.waitEnded(3_000)))
                problems.push(`after a 101, the server kept the connection 3 s past our ${c.after101 === "close" ? "close frame" : "FIN"}`);
            }
          } finally {
            conn.destroy();
          }
        }
        await afterCase(i, mark, problems, printable(bytes));
      },
      stats,
    );
  });

  it("survives every frame sequence on upgraded /ws and Socket.IO connections, and leaks no clientId", async () => {
    const stats = new Map<string, number>();
    await check(
      "frames",
      frameCase,
      FRAME_RUNS,
      async (conns: WsConnCase[]) => {
        const i = await live();
        const mark = i.logs.length;
        const host = `127.0.0.1:${i.port}`;
        const problems: string[] = [];
        const opened: { c: WsConnCase; conn: RawConnection }[] = [];
        try {
          // allSettled: every connection is opened (and so closed below) before this goes on, whatever fails.
          const outcomes = await Promise.allSettled(
            conns.map(async (c) => {
              const conn = await RawConnection.open(i.port);
              opened.push({ c, conn });
              conn.write(buildRequest({ target: c.target, headers: upgradeHeaders(host) }));
              const res = await conn.response({ timeoutMs: 3_000 });
              if (res.status !== 101) {
                problems.push(`${c.target}: a valid handshake got ${shown(res)}`);
                return;
              }
              conn.writeSplit(Buffer.concat(c.frames.map((f: FrameSpec) => frameBytes(f, MAX_MESSAGE_BYTES))), c.cuts);
              if (c.end === "destroy") {
                tally(stats, "destroyed");
                return conn.destroy();
              }
              if (c.end === "close") conn.write(closeFrame(1000));
              else conn.end();
              const { close } = await conn.readUntilClose(3_000);
              tally(stats, close ? `close ${close.code ?? "(no code)"}` : "no close frame");
              if (close?.code !== undefined && !RFC_CLOSE_CODE(close.code))
                problems.push(`${c.target}: the server closed with code ${close.code}, which RFC 6455 does not allow on the wire`);
              if (!(await conn.waitEnded(3_000)))
                problems.push(`${c.target}: the server kept the connection 3 s past our ${c.end === "close" ? "close frame" : "FIN"}`);
            }),
          );
          for (const o of outcomes) if (o.status === "rejected") problems.push(`a connection failed: ${(o.reason as Error).message}`);
        } finally {
          for (const { conn } of opened) conn.destroy();
        }
        await afterCase(i, mark, problems, JSON.stringify(conns).slice(0, 2_000));
      },
      stats,
    );
  });

  it("leaves no wbs:client:* key in Redis beyond the live connections", async () => {
    const i = await live();
    await waitForHoldings(i.url, settled, "settled after the fuzz");
    let keys: string[] = [];
    let listed: string[] = [];
    await eventually(async () => {
      keys = await redisKeys(redis!.port);
      listed = ((await (await fetch(`${i.url}/clients`)).json()) as { clients: string[] }).clients;
      return keys.every((k) => listed.includes(k));
    }, "every wbs:client key held by a live connection").catch((err: Error) => {
      throw new Error(`${err.message}: keys ${JSON.stringify(keys)}, connections ${JSON.stringify(listed)}`);
    });
    const h = await holdings(i.url);
    expect(keys.length).to.be.at.most(h.connections);
    expect(h.clientIds).to.equal(h.connections);
  });
});
