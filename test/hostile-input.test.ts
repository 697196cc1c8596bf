/**
 * Hostile input: what a client controls (the request target, the handshake
 * headers, the frames, the text) must never end the process, leak a clientId,
 * open a session on a draining instance, forge a line on another client's
 * terminal, or pass the origin check by naming itself in Host.
 *
 * The fuzz tests at the end print their seed; replay a failure with
 *   FUZZ_SEED=<seed> FUZZ_PATH=<path> npx mocha test/hostile-input.test.ts --grep "<test name>"
 * and scale them with FUZZ_RUNS (raw HTTP cases), FUZZ_FRAME_RUNS (frame
 * cases), FUZZ_CONNECT_RUNS (several CONNECTs a session), FUZZ_AUTH_RUNS (odd
 * CONNECT auth), FUZZ_PROXY_RUNS (forged forwarding headers) and
 * FUZZ_OFFSET_RUNS (odd resume offsets); those four stop at
 * FUZZ_CASE_TIME_LIMIT_MS each (12 s), the first two at FUZZ_TIME_LIMIT_MS.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect } from "chai";
import fc from "fast-check";
import { freePort } from "../harness/ports.js";
import { poll } from "../harness/waiting.js";
import type { Welcome } from "../server/protocol.js";
import { REFUSED_UPGRADE_LINGER_MS } from "../server/realtime/reject.js";
import { type InstanceProcess, startInstance } from "../harness/instance.js";
import { type RedisProcess, startRedis } from "../harness/redis.js";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type WsClient, wsRefusal } from "./helpers/clients.js";
import { type Cluster, startCluster } from "./helpers/cluster.js";
import {
  type EngineSession,
  type HeaderList,
  type RootAnswer,
  PacketType,
  SioMirror,
  exchange,
  openSession,
  rootAnswer,
  sioPacket,
  wsHeaders,
} from "./helpers/engine-sessions.js";
import {
  type AuthRef,
  type ForgedCase,
  type FrameSpec,
  type HttpCase,
  type MultiConnectSession,
  type OddAuth,
  type OddAuthCase,
  type OddValue,
  type ResumeClient,
  type WsConnCase,
  forgedCase,
  frameBytes,
  frameCase,
  httpCase,
  httpCaseRequest,
  multiConnectCase,
  oddAuthCase,
  oddAuthJson,
  resumeCase,
  withAddresses,
} from "./helpers/fuzz-inputs.js";
import { hmacKey, signJwt, unsignedJwt } from "./helpers/jwt.js";
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
  const CONNECT_RUNS = Number(process.env.FUZZ_CONNECT_RUNS ?? 120);
  const AUTH_RUNS = Number(process.env.FUZZ_AUTH_RUNS ?? 150);
  const PROXY_RUNS = Number(process.env.FUZZ_PROXY_RUNS ?? 50);
  const OFFSET_RUNS = Number(process.env.FUZZ_OFFSET_RUNS ?? 60);
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const path = process.env.FUZZ_PATH;
  /** Time allowed for each property, shrinking included (a crash costs a restart per shrink step). */
  const TIME_LIMIT_MS = Number(process.env.FUZZ_TIME_LIMIT_MS ?? 60_000);
  /** The same for each of the session, auth, forwarding and offset properties, which cost more a case. */
  const CASE_TIME_LIMIT_MS = Number(process.env.FUZZ_CASE_TIME_LIMIT_MS ?? 12_000);
  this.timeout(TIME_LIMIT_MS * 2 + 60_000);

  let redis: RedisProcess | undefined;
  /** Every process this suite started (restarts included), all stopped in after(). */
  const started: InstanceProcess[] = [];
  /** The case still running when a property returns (interrupted at its time limit): awaited before anything is stopped. */
  let inFlight: Promise<unknown> = Promise.resolve();
  let restarts = 0;

  /** One instance process to fuzz, started again (fresh) whenever a case killed it, so each case and each shrink step meets a live one. */
  const target = (env: (port: number) => Record<string, string>, beforeRestart: () => Promise<unknown> = async () => undefined) => {
    let current: InstanceProcess | undefined;
    let port = 0;
    const start = async () => {
      port ||= await freePort();
      current = await startInstance({ env: env(port) });
      started.push(current);
    };
    return {
      start,
      async live(): Promise<InstanceProcess> {
        if (!current || (await hasExited(current))) {
          restarts++;
          await beforeRestart();
          await start();
        }
        return current!;
      },
    };
  };

  /** With Redis and small messages: the raw HTTP and frame cases, and the multi-CONNECT and offset cases. */
  const main = target(
    (port) => ({
      PORT: String(port),
      INSTANCE_ID: "fz1",
      REDIS_URL: redis!.url,
      MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
      PERIODIC_INTERVAL_SEC: "0",
    }),
    // The dead process's ids would stay taken for their lease (6 s) and make
    // the next cases meet duplicates they did not cause: drop them, as expiry would.
    () => run("redis-cli", ["-p", String(redis!.port), "FLUSHALL"], { timeout: 5_000 }),
  );
  /** The default message size (so Engine.IO reads packets of about 132 KiB) and client tokens required: the odd auth cases. */
  const JWT_SECRET = "hostile-input-fuzz-secret-0123456789abcdef";
  const wide = target((port) => ({ PORT: String(port), INSTANCE_ID: "fz2", PERIODIC_INTERVAL_SEC: "0", AUTH_JWT_SECRET: JWT_SECRET }));
  /** Trusts one proxy (127.0.0.1) and cuts a flooder after two refused messages, for 30 s: the forged forwarding cases. */
  const proxied = target((port) => ({
    PORT: String(port),
    INSTANCE_ID: "fz3",
    PERIODIC_INTERVAL_SEC: "0",
    TRUST_PROXY: "127.0.0.1",
    RATE_LIMIT_MESSAGES_PER_SEC: "1",
    RATE_LIMIT_BURST: "1",
    RATE_LIMIT_DISCONNECT_AFTER: "2",
    RATE_LIMIT_PENALTY_SEC: "30",
  }));

  before(async function () {
    this.timeout(90_000);
    redis = await startRedis();
    await Promise.all([main.start(), wide.start(), proxied.start()]);
  });
  after(async function () {
    this.timeout(30_000);
    await inFlight;
    await Promise.all(started.map((i) => i.stop(1_000)));
    await redis?.stop();
  });

  const live = () => main.live();

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
  async function check<T>(
    name: string,
    arb: fc.Arbitrary<T>,
    numRuns: number,
    predicate: (v: T) => Promise<void>,
    stats: Map<string, number>,
    timeLimitMs = TIME_LIMIT_MS,
  ): Promise<void> {
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
      plugins: [fc.interruptAfterTimeLimit(timeLimitMs)],
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

  /** Codes a CONNECT to "/" may be refused with on the main instance (no client tokens there). */
  const ROOT_REFUSALS: unknown[] = ["BAD_REQUEST", "INVALID_CLIENT_ID", "DUPLICATE_CLIENT_ID"];
  /** How long a case waits for any one answer before it calls the answer missing. */
  const ANSWER_MS = 5_000;

  /** What one multi-CONNECT session got: how many of its CONNECTs to "/" opened a socket, and the session, to end. */
  interface SessionRun {
    session: EngineSession | undefined;
    accepts: number;
  }

  /**
   * Sends a session's batches; after each, reads until every CONNECT to "/"
   * sent so far has its answer (an open, `40{"sid":...}`, or a refusal, `44{...}`)
   * or the session is over. Problems go to `problems`.
   */
  async function multiConnect(i: InstanceProcess, s: MultiConnectSession, label: string, problems: string[], stats: Map<string, number>): Promise<SessionRun> {
    const opened = await openSession(i.url, s.transport);
    if ("refused" in opened) {
      problems.push(`${label}: the session did not open: ${opened.refused}`);
      return { session: undefined, accepts: 0 };
    }
    const session = opened;
    const mirror = new SioMirror();
    let connects = 0;
    let disconnects = 0;
    let answered = 0;
    let accepts = 0;
    const received: string[] = [];
    for (const batch of s.batches) {
      if (session.closed) break;
      for (const packet of batch) {
        const p = mirror.feed(packet);
        if (p === undefined || p === "invalid" || p.nsp !== "/") continue;
        if (p.type === PacketType.CONNECT) connects++;
        if (p.type === PacketType.DISCONNECT) disconnects++;
      }
      const sent = await session.send(batch);
      if (sent.status !== undefined && sent.status >= 500) problems.push(`${label}: a POST of ${JSON.stringify(batch)} answered ${sent.status}`);
      while (!session.closed && answered < connects) {
        const got = await session.receive(ANSWER_MS);
        if (got.timedOut) {
          problems.push(
            `${label}: ${connects - answered} CONNECT(s) to / had no answer within ${ANSWER_MS} ms while the session stayed open; received ${JSON.stringify(received)}`,
          );
          break;
        }
        for (const packet of got.packets) {
          received.push(packet.slice(0, 200));
          const a = rootAnswer(packet);
          if (!a) continue;
          answered++;
          if (a.kind === "accepted") {
            accepts++;
            if (typeof a.sid !== "string") problems.push(`${label}: an accepted CONNECT without a sid: ${packet}`);
          } else if (!ROOT_REFUSALS.includes(a.code) || typeof a.message !== "string") {
            problems.push(`${label}: a CONNECT_ERROR that is not a coded refusal (${ROOT_REFUSALS.join(", ")}): ${packet.slice(0, 300)}`);
          } else tally(stats, `refused ${a.code}`);
        }
        if (got.closed) tally(stats, "ended by the server");
      }
    }
    if (accepts > 1 + disconnects)
      problems.push(
        `${label}: ${accepts} CONNECTs to / were accepted in one session that sent ${disconnects} DISCONNECT(s): at most ${1 + disconnects} sockets may open; received ${JSON.stringify(received)}`,
      );
    tally(stats, `${accepts} accepted`);
    return { session, accepts };
  }

  it("opens at most one socket on / per Engine.IO session, however many CONNECTs it sends, and leaks no clientId", async () => {
    const stats = new Map<string, number>();
    await check(
      "multi-CONNECT",
      multiConnectCase,
      CONNECT_RUNS,
      async (sessions: MultiConnectSession[]) => {
        const i = await live();
        const mark = i.logs.length;
        const problems: string[] = [];
        const base = await waitForHoldings(i.url, settled, "settled before the case");
        const runs: SessionRun[] = [];
        try {
          runs.push(...(await Promise.all(sessions.map((s, k) => multiConnect(i, s, `session ${k} (${s.transport})`, problems, stats)))));
          // While they are open: no socket on / beyond one for each open session that was accepted.
          const open = runs.filter((r) => r.session && !r.session.closed && r.accepts > 0).length;
          const during = await holdings(i.url);
          const more = (during.byTransport["socket.io"] ?? 0) - (base.byTransport["socket.io"] ?? 0);
          if (more > open)
            problems.push(
              `${more} Socket.IO socket(s) on / more than before the case, for ${open} open session(s) that were accepted: ${JSON.stringify({ base, during })}`,
            );
        } finally {
          await Promise.all(runs.map((r, k) => r.session?.end(sessions[k]!.end)));
        }
        await waitForHoldings(
          i.url,
          (h) => settled(h) && h.connections <= base.connections && (h.clientIds ?? 0) <= (base.clientIds ?? 0),
          `wbs_client_ids equal to wbs_connections and both back to the baseline ${JSON.stringify(base)} once the sessions ended`,
        ).catch((err: Error) => problems.push(err.message));
        await afterCase(i, mark, problems, JSON.stringify(sessions).slice(0, 2_000));
      },
      stats,
      CASE_TIME_LIMIT_MS,
    );
  });

  /** What an odd resume must get in its welcome, by what the server was sent (see the README's recovery section). */
  const OFFSET = /^\d{1,16}-\d{1,16}$/;
  const EPOCH = /^[A-Za-z0-9_-]{1,32}$/;
  interface PlannedResume {
    via: ResumeClient["via"];
    offset: unknown;
    epoch: unknown;
    expect: { recovered: boolean; reason?: string };
  }
  function planResume(c: ResumeClient, head: { epoch: string; offset: string }): PlannedResume {
    const [ms = 0, seq = 0] = head.offset.split("-").map(Number);
    const o = c.offset;
    const offset: unknown =
      "future" in o
        ? {
            far: "9999999999999-0",
            max: "9999999999999999-9999999999999999",
            "next-ms": `${ms + 1 + o.k}-0`,
            "next-seq": `${ms}-${seq + 1 + o.k}`,
            padded: `${String(ms + 1 + o.k).padStart(16, "0")}-0`,
          }[o.future]
        : "head" in o
          ? head.offset
          : "raw" in o
            ? o.raw
            : o.value;
    const e = c.epoch;
    const other = "other" in e && e.other === head.epoch ? `${e.other.slice(0, 31)}${e.other.endsWith("x") ? "y" : "x"}` : undefined;
    const epoch: unknown = "current" in e ? head.epoch : "other" in e ? (other ?? e.other) : "raw" in e ? e.raw : "value" in e ? e.value : undefined;
    // /ws carries text: what is not a string goes as its JSON.
    const asSent = (v: unknown) => (c.via === "ws" && v !== undefined && typeof v !== "string" ? JSON.stringify(v) : v);
    const [so, se] = [asSent(offset), asSent(epoch)];
    const valid = typeof so === "string" && OFFSET.test(so) && typeof se === "string" && EPOCH.test(se);
    const expect = !valid
      ? { recovered: false }
      : se !== head.epoch
        ? { recovered: false, reason: "EPOCH_CHANGED" }
        : "head" in o
          ? { recovered: true }
          : { recovered: false, reason: "FUTURE_OFFSET" };
    return { via: c.via, offset: so, epoch: se, expect };
  }

  /** A client that resumes as planned: its welcome, and a wait for a message of `text`. */
  async function resumeClient(url: string, p: PlannedResume): Promise<{ welcome: Welcome; message(text: string): Promise<unknown>; close(): void }> {
    if (p.via === "ws") {
      const q = [
        ...(p.offset === undefined ? [] : [`since=${encodeURIComponent(String(p.offset))}`]),
        ...(p.epoch === undefined ? [] : [`epoch=${encodeURIComponent(String(p.epoch))}`]),
      ];
      const c = await connectWs(`${ws(url)}/ws?format=json${q.map((x) => `&${x}`).join("")}`);
      try {
        const welcome = await c.nextJson<Welcome>("welcome", undefined, ANSWER_MS);
        return { welcome, message: (text) => c.nextJson("message", (m: { text: string }) => m.text === text, 3_000), close: () => c.ws.terminate() };
      } catch (err) {
        c.ws.terminate();
        throw err;
      }
    }
    const auth = { ...(p.offset === undefined ? {} : { offset: p.offset }), ...(p.epoch === undefined ? {} : { epoch: p.epoch }) };
    const c = await connectIo(url, { transports: [p.via === "sio-polling" ? "polling" : "websocket"], auth });
    try {
      const welcome = await c.next<Welcome>("welcome", undefined, ANSWER_MS);
      return { welcome, message: (text) => c.next("message", (m: { text: string }) => m.text === text, 3_000), close: () => c.close() };
    } catch (err) {
      c.close();
      throw err;
    }
  }

  it("welcomes a resume from a future, malformed or other-epoch offset with recovered: false, and drops no broadcast after it", async () => {
    const stats = new Map<string, number>();
    let runs = 0;
    await check(
      "odd offsets",
      resumeCase,
      OFFSET_RUNS,
      async (clients: ResumeClient[]) => {
        const i = await live();
        const mark = i.logs.length;
        const problems: string[] = [];
        const text = `after the resume #${++runs}`;
        const open: { close(): void }[] = [];
        let planned: PlannedResume[] = [];
        try {
          // The head: where a client that sends no offset starts.
          const observer = await connectWs(`${ws(i.url)}/ws?format=json`);
          open.push({ close: () => observer.ws.terminate() });
          const head = await observer.nextJson<Welcome>("welcome", undefined, ANSWER_MS);
          planned = clients.map((c) => planResume(c, head));
          const connected = await Promise.allSettled(planned.map((p) => resumeClient(i.url, p)));
          const resumed: { p: PlannedResume; c: Awaited<ReturnType<typeof resumeClient>> }[] = [];
          connected.forEach((r, k) => {
            const p = planned[k]!;
            if (r.status === "rejected") return void problems.push(`${p.via} resuming from ${JSON.stringify(p)}: no welcome: ${(r.reason as Error).message}`);
            open.push(r.value);
            resumed.push({ p, c: r.value });
            const w = r.value.welcome;
            tally(stats, `${w.recovered ? "recovered" : "not recovered"}${w.reason ? ` ${w.reason}` : ""}`);
            const wrong: string[] = [];
            if (w.recovered !== p.expect.recovered) wrong.push(`recovered: ${w.recovered}, not ${p.expect.recovered}`);
            if (w.reason !== p.expect.reason && (p.expect.reason !== undefined || p.expect.recovered))
              wrong.push(`reason ${JSON.stringify(w.reason)}, not ${JSON.stringify(p.expect.reason)}`);
            if (w.replayed !== 0) wrong.push(`replayed ${w.replayed}, not 0 (nothing lies after the head)`);
            if (w.offset !== head.offset || w.epoch !== head.epoch)
              wrong.push(`it stands at ${w.epoch}/${w.offset}, not at the head ${head.epoch}/${head.offset} (a future offset is no place to stand)`);
            if (wrong.length > 0)
              problems.push(
                `${p.via} resuming from offset ${JSON.stringify(p.offset)} of epoch ${JSON.stringify(p.epoch)}: ${wrong.join("; ")}; welcome ${JSON.stringify(w)}`,
              );
          });
          // A broadcast after the connect reaches every one of them (and the observer): a boundary left waiting for the future offset would drop it.
          const res = await fetch(`${i.url}/broadcast-to-all`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ message: text }),
          });
          if (res.status !== 200) problems.push(`POST /broadcast-to-all answered ${res.status} ${await res.text()}`);
          const got = await Promise.allSettled([
            observer.nextJson("message", (m: { text: string }) => m.text === text, 3_000),
            ...resumed.map((r) => r.c.message(text)),
          ]);
          got.forEach((g, k) => {
            if (g.status === "fulfilled") return;
            const who = k === 0 ? "the observer (no offset)" : `${resumed[k - 1]!.p.via} resuming from ${JSON.stringify(resumed[k - 1]!.p)}`;
            problems.push(`${who} did not receive the broadcast sent after its welcome: ${(g.reason as Error).message}`);
          });
        } catch (err) {
          problems.push(`the case failed: ${(err as Error).message}`);
        } finally {
          for (const c of open) c.close();
        }
        await afterCase(i, mark, problems, JSON.stringify({ clients, planned }));
      },
      stats,
      CASE_TIME_LIMIT_MS,
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

  /** Codes a CONNECT with an odd auth may be refused with where client tokens are required. */
  const AUTH_REFUSALS: unknown[] = ["BAD_REQUEST", "INVALID_CLIENT_ID", "UNAUTHORIZED", "TOKEN_EXPIRED"];

  /**
   * What the server must do with one odd CONNECT: accept it (a valid token,
   * the clientId absent or a valid one, nothing large), refuse it with a
   * code (a missing, bad or expired token), refuse it or end the session (a
   * payload that is not an object, which Socket.IO's parser refuses, or one
   * over Engine.IO's limit), or either accept or refuse it (large but
   * well-formed, or an odd clientId: valid ones name the connection).
   */
  function authExpectation(a: OddAuth, json: string, maxPayload: number): "accept" | "refuse" | "refuse or end" | "accept or refuse" {
    if (Buffer.byteLength(`40${json}`) > maxPayload) return "refuse or end";
    if ("whole" in a) {
      const object =
        ("json" in a.whole && typeof a.whole.json === "object" && a.whole.json !== null && !Array.isArray(a.whole.json)) ||
        ("nest" in a.whole && a.whole.nest === "object");
      // An object without a valid token is refused; anything else never gets past Socket.IO's parser.
      return object ? "refuse" : "refuse or end";
    }
    const field = (k: string) => a.fields.find(([name]) => name === k)?.[1];
    const is = (v: OddValue | undefined, ref: AuthRef) => v !== undefined && "ref" in v && v.ref === ref;
    const clientId = field("clientId");
    if (!is(field("token"), "jwt")) return "refuse";
    const rooms = field("rooms");
    const roomsFine = rooms === undefined || ("json" in rooms && Array.isArray(rooms.json) && rooms.json.length <= 100);
    const clientIdFine = clientId === undefined || is(clientId, "sub");
    return json.length <= 2_048 && roomsFine && clientIdFine ? "accept" : "accept or refuse";
  }

  it("answers every odd or oversized CONNECT auth with a coded refusal or a session, never INTERNAL, and leaks no clientId", async () => {
    const stats = new Map<string, number>();
    const key = hmacKey(JWT_SECRET);
    let runs = 0;
    await check(
      "odd auth",
      oddAuthCase,
      AUTH_RUNS,
      async (c: OddAuthCase) => {
        const i = await wide.live();
        const mark = i.logs.length;
        const problems: string[] = [];
        const sub = `odd-${++runs}`;
        const now = Math.floor(Date.now() / 1000);
        const refs: Record<AuthRef, string> = {
          sub,
          "other-sub": `other-${runs}`,
          jwt: await signJwt(key, "HS256", { sub }),
          "expired-jwt": await signJwt(key, "HS256", { sub, iat: now - 600, exp: now - 300 }),
          "unsigned-jwt": unsignedJwt({ sub }),
        };
        const shownAuth = (json: string) => (json.length > 300 ? `${json.slice(0, 150)}…(${json.length} characters)…${json.slice(-100)}` : json);
        const opened = await openSession(i.url, c.transport);
        if ("refused" in opened) problems.push(`the session did not open: ${opened.refused}`);
        else {
          const session = opened;
          try {
            for (const [k, auth] of c.connects.entries()) {
              if (session.closed) break;
              const json = oddAuthJson(auth, refs);
              const expected = authExpectation(auth, json, session.maxPayload);
              const what = `CONNECT ${k + 1} of ${c.connects.length} (${c.transport}, expected: ${expected}) with auth ${shownAuth(json)}`;
              const sent = await session.send([`40${json}`]);
              if (sent.status !== undefined && sent.status >= 500) problems.push(`${what}: the POST answered ${sent.status}`);
              let answer: RootAnswer | undefined;
              let welcome: { clientId?: unknown; user?: unknown } | undefined;
              let ended: string | undefined = session.closed ? `the POST answered ${sent.status ?? sent.error}` : undefined;
              const received: string[] = [];
              // Its answer, and after an accept the welcome.
              while (!session.closed && (!answer || (answer.kind === "accepted" && !welcome))) {
                const got = await session.receive(ANSWER_MS);
                if (got.timedOut) {
                  problems.push(`${what}: ${answer ? "no welcome" : "no answer"} within ${ANSWER_MS} ms; received ${JSON.stringify(received)}`);
                  break;
                }
                if (got.closed) ended = got.how;
                for (const packet of got.packets) {
                  received.push(packet.slice(0, 200));
                  answer ??= rootAnswer(packet);
                  const p = sioPacket(packet);
                  if (p?.type === PacketType.EVENT && Array.isArray(p.data) && p.data[0] === "welcome")
                    welcome = p.data[1] as { clientId?: unknown; user?: unknown };
                }
              }
              tally(stats, `${expected}: ${answer ? (answer.kind === "accepted" ? "accepted" : `refused ${answer.code}`) : `ended (${ended})`}`);
              if (!answer) {
                if (expected !== "refuse or end")
                  problems.push(`${what}: the session ended (${ended}) without an answer; received ${JSON.stringify(received)}`);
                break;
              }
              if (answer.kind === "refused") {
                if (!AUTH_REFUSALS.includes(answer.code) || typeof answer.message !== "string")
                  problems.push(`${what}: a CONNECT_ERROR that is not a coded refusal (${AUTH_REFUSALS.join(", ")}): ${JSON.stringify(answer).slice(0, 300)}`);
                else if (expected === "accept")
                  problems.push(`${what}: refused ${answer.code} (${String(answer.message).slice(0, 200)}), though it is a valid handshake`);
                continue;
              }
              if (expected === "refuse" || expected === "refuse or end") problems.push(`${what}: accepted`);
              else if (welcome && welcome.user !== sub)
                problems.push(`${what}: welcomed as user ${JSON.stringify(welcome.user)}, not as the token's subject ${sub}`);
              // A CONNECT on an open socket ends the session: this one is done.
              break;
            }
          } finally {
            await session.end(c.end);
          }
        }
        await waitForHoldings(i.url, (h) => h.connections === 0 && h.clientIds === 0, "no connection and no clientId left once the session ended").catch(
          (err: Error) => problems.push(err.message),
        );
        await afterCase(
          i,
          mark,
          problems,
          JSON.stringify(c, (_k, v: unknown) => (typeof v === "string" && v.length > 200 ? `${v.slice(0, 200)}…` : v)).slice(0, 3_000),
        );
      },
      stats,
      CASE_TIME_LIMIT_MS,
    );
  });

  /** Two fresh loopback source addresses for each case (a penalty lasts 30 s): the flooder's, @A, and another's, @B. */
  let sources = 0;
  const sourcePair = (): [string, string] => {
    const n = sources++;
    const tail = `${(Math.floor(n / 250) % 250) + 1}.${(n % 250) + 1}`;
    return [`127.81.${tail}`, `127.82.${tail}`];
  };
  /** Resolves with `p`, or rejects after `ms` (an event that never came). */
  const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms).unref())]);

  /** A Socket.IO CONNECT over a polling session from `from` with `headers` on every request: its answer (or why none came). */
  async function sioAnswer(baseUrl: string, from: string, headers: HeaderList): Promise<RootAnswer | string> {
    const s = await openSession(baseUrl, "polling", { localAddress: from, headers });
    if ("refused" in s) return s.refused;
    try {
      await s.send(["40"]);
      while (!s.closed) {
        const got = await s.receive(ANSWER_MS);
        for (const p of got.packets) {
          const a = rootAnswer(p);
          if (a) return a;
        }
        if (got.timedOut) return `no answer within ${ANSWER_MS} ms`;
      }
      return "the session ended without an answer";
    } finally {
      await s.end("close-packet");
    }
  }

  /** Codes a request frame on /ws may be answered with (never INTERNAL). */
  const REQUEST_REFUSALS: unknown[] = ["BAD_REQUEST", "FORBIDDEN", "UNAUTHORIZED", "TOKEN_EXPIRED", "TOO_MANY_ROOMS", "TOO_LARGE", "RATE_LIMITED"];
  /** Odd values for a claim or a field: valid-looking patterns and room names, and anything JSON. */
  const oddValue = fc.oneof(
    fc.constantFrom("lobby", "team:*", "*", "user:*", "a*b", "has space", "", "x".repeat(70), "user:other"),
    fc.array(fc.constantFrom("lobby", "team:*", "*", "user:*", "a*b", "x".repeat(70), "ok.room"), { maxLength: 70 }),
    fc.jsonValue({ maxDepth: 2 }),
  );
  const PATTERNS = ["lobby", "team:*", "*", "user:*", "team:1", "ok.room"];
  // Mostly valid claims (so the requests meet an open connection), some odd ones (refused at the upgrade).
  const claimCase = fc.oneof(
    { weight: 3, arbitrary: fc.record({ read: fc.subarray(PATTERNS), send: fc.subarray(PATTERNS), broadcast: fc.boolean() }, { requiredKeys: [] }) },
    {
      weight: 1,
      arbitrary: fc.record({ read: oddValue, send: oddValue, broadcast: fc.oneof(fc.boolean(), fc.jsonValue({ maxDepth: 1 })) }, { requiredKeys: [] }),
    },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
  const requestCase = fc.record(
    {
      type: fc.oneof(fc.constantFrom("join", "leave", "refresh", "message", "nope"), fc.jsonValue({ maxDepth: 1 })),
      room: fc.oneof(fc.constantFrom("lobby", "team:1", "team:2", "ok.room", "user:other", "secret"), oddValue),
      text: oddValue,
      id: fc.oneof(fc.nat(), fc.string({ maxLength: 80 }), fc.jsonValue({ maxDepth: 1 })),
      token: fc.oneof(fc.constantFrom("@same-user", "@other-user", "@expired", "@forged"), fc.jsonValue({ maxDepth: 1 })),
    },
    { requiredKeys: [] },
  );

  it("answers every token claim and /ws request frame with a coded answer, never INTERNAL, and leaks nothing", async () => {
    const stats = new Map<string, number>();
    const key = hmacKey(JWT_SECRET);
    let runs = 0;
    await check(
      "claims and requests",
      fc.record({ claim: claimCase, requests: fc.array(requestCase, { maxLength: 12 }) }),
      AUTH_RUNS,
      async (c) => {
        const i = await wide.live();
        const mark = i.logs.length;
        const problems: string[] = [];
        const user = `claims-${++runs}`;
        const now = Math.floor(Date.now() / 1000);
        const tokenFor = async (ref: unknown): Promise<unknown> =>
          ref === "@same-user"
            ? signJwt(key, "HS256", { sub: user, ...(c.claim ? { wbs: c.claim } : {}) })
            : ref === "@other-user"
              ? signJwt(key, "HS256", { sub: `${user}-other` })
              : ref === "@expired"
                ? signJwt(key, "HS256", { sub: user, iat: now - 600, exp: now - 300 })
                : ref === "@forged"
                  ? signJwt(hmacKey(`${JWT_SECRET}-not`), "HS256", { sub: user })
                  : ref;
        const token = (await tokenFor("@same-user")) as string;
        const url = `ws://127.0.0.1:${i.port}/ws?format=json&token=${token}`;
        let client: WsClient | undefined;
        try {
          client = await connectWs(url).catch(async (err: { status?: number; body?: string }) => {
            const code = (JSON.parse(err.body ?? "{}") as { code?: string }).code;
            tally(stats, `refused ${err.status} ${code}`);
            if (err.status !== 401 || code !== "UNAUTHORIZED")
              problems.push(`the upgrade was refused ${err.status} ${err.body}: only a bad claim may refuse it`);
            return undefined;
          });
          if (client) {
            const welcome = await client.nextJson("welcome");
            if (welcome.user !== user) problems.push(`welcomed as user ${JSON.stringify(welcome.user)}`);
            for (const r of c.requests) {
              const frame = { ...r, ...(r.token !== undefined ? { token: await tokenFor(r.token) } : {}) };
              client.ws.send(JSON.stringify(frame));
            }
            // A sentinel request: answered after everything before it, so the connection was served all along.
            client.ws.send(JSON.stringify({ type: "leave", room: "sentinel", id: "sentinel" }));
            await client.next((f) => f.includes('"id":"sentinel"'), 5_000).catch(() => problems.push("no answer to the sentinel request"));
            for (const raw of client.inbox.all(() => true)) {
              const f = JSON.parse(raw) as { type?: string; data?: { code?: unknown } };
              if (f.type === "error") {
                tally(stats, `error ${String(f.data?.code)}`);
                if (!REQUEST_REFUSALS.includes(f.data?.code)) problems.push(`an error frame that is not a coded refusal: ${raw.slice(0, 300)}`);
              } else if (f.type === "ack") tally(stats, "ack");
              else if (f.type === "message" && typeof (f.data as { room?: unknown } | undefined)?.room === "string") {
                // A room message reached it: it must be a room this connection may read.
                const room = (f.data as { room: string }).room;
                if (room.startsWith("user:") && room !== `user:${user}`) problems.push(`received another user's personal room ${room}`);
              }
            }
          }
        } finally {
          client?.close();
        }
        await afterCase(i, mark, problems, JSON.stringify(c).slice(0, 2_000));
      },
      stats,
      CASE_TIME_LIMIT_MS,
    );
  });

  it("takes the TCP peer for the client's address whatever forwarding headers say, and refuses admin to forwarded requests", async () => {
    const stats = new Map<string, number>();
    await check(
      "forged forwarding",
      forgedCase,
      PROXY_RUNS,
      async (c: ForgedCase) => {
        const i = await proxied.live();
        const mark = i.logs.length;
        const problems: string[] = [];
        const [a, b] = sourcePair();
        const forged = (h: HeaderList) => withAddresses(h, a, b);
        const base = `http://127.0.0.1:${i.port}`;
        const wsBase = ws(base);
        const open: WsClient[] = [];
        try {
          // @A floods with forged headers until it is cut: the cut names its real address.
          const flooder = await connectWs(`${wsBase}/ws`, { localAddress: a, headers: wsHeaders(forged(c.flood)) }).catch(
            (err: Error & { status?: number }) => {
              problems.push(`the flooder's first upgrade from ${a} was refused: ${err.status ?? err.message}`);
              return undefined;
            },
          );
          if (flooder) {
            open.push(flooder);
            const id = /as (\S+) at/.exec(await flooder.next(undefined, ANSWER_MS))?.[1];
            for (let m = 0; m < 6; m++) flooder.ws.send(`flood ${m}`);
            const closed = await within(flooder.closed, ANSWER_MS, "the flooder's close").catch((err: Error) => ({ code: err.message, reason: "" }));
            tally(stats, `flooder closed ${closed.code}`);
            if (closed.code !== 1008) problems.push(`the flooder from ${a} was not cut with 1008: ${JSON.stringify(closed)}`);
            const cut = await i.waitForLog((r) => r.msg.startsWith("rate limit") && r.clientId === id, 3_000).catch(() => undefined);
            if (cut?.address !== a)
              problems.push(`the rate-limit cut of ${id} names the address ${JSON.stringify(cut?.address)}, not its peer ${a}: ${JSON.stringify(cut)}`);
          }
          // @A again, with other forged headers: the penalty follows the peer.
          const again = await wsRefusal(`${wsBase}/ws`, { localAddress: a, headers: wsHeaders(forged(c.retry)) }).catch((err: Error) => ({
            status: `accepted (${err.message})`,
            body: "",
            headers: {},
          }));
          tally(stats, `@A again ${again.status}`);
          if (again.status !== 429 || !String(again.body).includes('"RATE_LIMITED"'))
            problems.push(`a /ws upgrade from the cut peer ${a} got ${again.status} ${String(again.body).slice(0, 200)}, not 429 RATE_LIMITED`);
          const sioA = await sioAnswer(base, a, forged(c.retry));
          if (typeof sioA === "string" || sioA.kind !== "refused" || sioA.code !== "RATE_LIMITED")
            problems.push(`a Socket.IO CONNECT from the cut peer ${a} got ${JSON.stringify(sioA)}, not a RATE_LIMITED refusal`);
          // @B, naming @A in its headers: served.
          const other = await connectWs(`${wsBase}/ws`, { localAddress: b, headers: wsHeaders(forged(c.other)) }).catch(
            (err: Error & { status?: number; body?: string }) => {
              problems.push(`a /ws upgrade from ${b} naming ${a} was refused: ${err.status ?? err.message} ${err.body ?? ""}`);
              return undefined;
            },
          );
          if (other) {
            open.push(other);
            await other.next((f) => f.startsWith(" Welcome!"), ANSWER_MS).catch((err: Error) => problems.push(`${b}'s /ws got no welcome: ${err.message}`));
          }
          const sioB = await sioAnswer(base, b, forged(c.other));
          if (typeof sioB === "string" || sioB.kind !== "accepted")
            problems.push(`a Socket.IO CONNECT from ${b} naming ${a} got ${JSON.stringify(sioB)}, not accepted`);
          // Admin: a loopback request that carries a forwarding header came through a proxy.
          const [method, path] = c.adminRequest.split(" ") as [string, string];
          for (const from of ["127.0.0.1", a]) {
            const res = await exchange(`${base}${path}`, {
              method,
              localAddress: from,
              headers: [...forged(c.admin), ["Content-Type", "application/json"]],
              body: method === "POST" ? JSON.stringify({ message: "forwarded admin" }) : undefined,
            });
            tally(stats, `admin ${res.status}`);
            if (res.status !== 403 || !res.body.includes('"ADMIN_DISABLED"'))
              problems.push(
                `${c.adminRequest} from ${from} with ${JSON.stringify(forged(c.admin)).slice(0, 300)} got ${res.status ?? res.error} ${res.body.slice(0, 200)}, not 403 ADMIN_DISABLED`,
              );
          }
          const direct = await exchange(`${base}/clients`, { localAddress: b });
          if (direct.status !== 200)
            problems.push(`GET /clients from ${b} without forwarding headers got ${direct.status ?? direct.error} ${direct.body.slice(0, 200)}, not 200`);
        } catch (err) {
          problems.push(`the case failed: ${(err as Error).message}`);
        } finally {
          for (const ws of open) ws.ws.terminate();
        }
        await afterCase(i, mark, problems, JSON.stringify({ a, b, ...c }).slice(0, 3_000));
      },
      stats,
      CASE_TIME_LIMIT_MS,
    );
  });
});
