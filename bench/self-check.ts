/**
 * `npm run bench -- --self-check`: bench/engine-client.ts against
 * socket.io-client, at small scale, then the load generator end to end.
 *
 * 1. An in-process Socket.IO server with a 100 ms ping interval and an auth
 *    middleware: both clients connect (and the engine client is refused with
 *    the same connect_error), receive the same payloads, get the same acks,
 *    and stay connected across many pings.
 * 2. A real instance (server/main.ts): the same welcome and `message`
 *    payloads reach 10 socket.io-client and 10 engine clients.
 * 3. The generator (one child) and the publisher: 50 Socket.IO clients get
 *    every broadcast and the completion reports arrive.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { Server } from "socket.io";
import { io as ioClient, type Socket } from "socket.io-client";
import { freePort } from "../scripts/lib/free-port.js";
import { startInstance } from "../scripts/lib/instance.js";
import { ConnectError, EngineClient } from "./engine-client.js";
import { Fleet } from "./generator/fleet.js";
import { sleep } from "./lib/clock.js";
import { onCleanup } from "./lib/processes.js";
import { Publisher } from "./publisher.js";

type Check = { name: string; run: () => Promise<void> };

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

/** Next event `name` on an engine client (parsed mode). */
function engineNext(events: { event: string; args: unknown[] }[], name: string, ms = 3_000): Promise<unknown[]> {
  return withTimeout(
    (async () => {
      for (;;) {
        const i = events.findIndex((e) => e.event === name);
        if (i >= 0) return events.splice(i, 1)[0]!.args;
        await sleep(5);
      }
    })(),
    ms,
    `engine client event ${name}`,
  );
}

const sioNext = (s: Socket, name: string, ms = 3_000): Promise<unknown[]> =>
  withTimeout(new Promise((resolve) => s.once(name, (...args: unknown[]) => resolve(args))), ms, `socket.io-client event ${name}`);

async function inProcessChecks(): Promise<void> {
  const httpServer = http.createServer();
  const io = new Server(httpServer, { pingInterval: 100, pingTimeout: 200, transports: ["websocket"] });
  io.use((socket, next) => {
    if (socket.handshake.auth?.token === "good") return next();
    const err = new Error("not authorised") as Error & { data?: unknown };
    err.data = { code: "AUTH" };
    next(err);
  });
  const payload = { text: "héllo ünïcode \" quote", n: [1, 2, { deep: true }], nil: null };
  io.on("connection", (socket) => {
    socket.emit("hello", payload, 42);
    socket.on("echo", (a: unknown, b: unknown, ack: (...args: unknown[]) => void) => ack({ got: a }, b));
  });
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
  try {
    const sio = ioClient(url, { transports: ["websocket"], auth: { token: "good" }, reconnection: false, forceNew: true });
    const events: { event: string; args: unknown[] }[] = [];
    const eng = new EngineClient(url, { auth: { token: "good" }, onEvent: (event, args) => events.push({ event, args }) });
    const sioHello = sioNext(sio, "hello");
    await withTimeout(Promise.all([eng.ready, new Promise<void>((r) => sio.once("connect", () => r()))]), 3_000, "connect");
    ok(eng.sid && eng.socketId, "engine client has an Engine.IO sid and a socket id");
    deepStrictEqual(await engineNext(events, "hello"), await sioHello, "same payloads for `hello`");

    // Every ack argument, as socket.io-client hands them to an ack callback.
    const ackSio = await withTimeout(new Promise<unknown[]>((r) => sio.emit("echo", { a: [1, "x"] }, "second", (...args: unknown[]) => r(args))), 2_000, "sio ack");
    const ackEng = await withTimeout(eng.emitWithAck("echo", { a: [1, "x"] }, "second"), 2_000, "engine ack");
    deepStrictEqual(ackEng, ackSio, "same ack arguments");

    const sioNews = sioNext(sio, "news");
    io.emit("news", { big: "y".repeat(5_000) });
    deepStrictEqual(await engineNext(events, "news"), await sioNews, "same broadcast payload");

    // Ten ping intervals: both must still be connected (pongs answered).
    await sleep(1_000);
    strictEqual(io.of("/").sockets.size, 2, "both clients still connected after 10 pings");
    ok(eng.connected && sio.connected, "both clients report connected");

    let refused: unknown;
    const bad = new EngineClient(url, { auth: { token: "bad" } });
    await bad.ready.catch((err: unknown) => (refused = err));
    const sioBad = ioClient(url, { transports: ["websocket"], auth: { token: "bad" }, reconnection: false, forceNew: true });
    const sioErr = await withTimeout(new Promise<Error & { data?: unknown }>((r) => sioBad.once("connect_error", r)), 3_000, "connect_error");
    ok(refused instanceof ConnectError, "engine client rejects with a ConnectError");
    strictEqual((refused as ConnectError).message, sioErr.message, "same connect_error message");
    deepStrictEqual((refused as ConnectError).data, sioErr.data, "same connect_error data");
    sioBad.close();
    sio.close();
    eng.close();
  } finally {
    io.close();
    httpServer.closeAllConnections();
  }
}

async function instanceChecks(): Promise<void> {
  const port = await freePort();
  const instance = await startInstance({ env: { PORT: String(port), INSTANCE_ID: "selfcheck", PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "warn" } });
  const forget = onCleanup("self-check instance", () => instance.stop(3_000));
  try {
    const N = 10;
    const sios = Array.from({ length: N }, (_, i) =>
      ioClient(instance.url, { transports: ["websocket"], auth: { clientId: `sc-sio-${i}` }, reconnection: false, forceNew: true }),
    );
    const sioWelcomes = sios.map((s) => sioNext(s, "welcome"));
    const engEvents = Array.from({ length: N }, () => [] as { event: string; args: unknown[] }[]);
    const engs = engEvents.map((events, i) => new EngineClient(instance.url, { auth: { clientId: `sc-eng-${i}` }, onEvent: (event, args) => events.push({ event, args }) }));
    await withTimeout(Promise.all([...engs.map((e) => e.ready), ...sios.map((s) => new Promise<void>((r) => s.once("connect", () => r())))]), 5_000, "20 clients connect");
    const shape = (w: unknown) => Object.keys(w as object).sort();
    const sw = (await sioWelcomes[0]!)[0] as { clientId: string };
    const ew = (await engineNext(engEvents[0]!, "welcome"))[0] as { clientId: string };
    deepStrictEqual(shape(ew), shape(sw), "welcome has the same fields");
    strictEqual(ew.clientId, "sc-eng-0", "auth clientId reached the server");

    const sioMsgs = sios.map((s) => sioNext(s, "message"));
    const ack = await sios[0]!.timeout(2_000).emitWithAck("message", "self-check broadcast");
    deepStrictEqual(ack, { ok: true }, "message ack");
    const expected = (await sioMsgs[0]!)[0];
    for (const m of sioMsgs) deepStrictEqual((await m)[0], expected, "every socket.io-client got the same message");
    for (const events of engEvents) deepStrictEqual((await engineNext(events, "message"))[0], expected, "every engine client got the same message");

    // The engine client's own emit with ack, to an empty room (what the echo scenario sends).
    const engAck = await withTimeout(engs[0]!.emitWithAck("message", { text: "room-only", room: "bench-echo-void" }), 2_000, "engine ack");
    deepStrictEqual(engAck, [{ ok: true }], "engine client ack through the service");
    for (const s of sios) s.close();
    for (const e of engs) e.close();

    // The generator and publisher end to end.
    const fleet = await Fleet.start(1);
    const forgetFleet = onCleanup("self-check fleet", () => fleet.stop());
    try {
      const r = await fleet.connect({ group: "self-check", kind: "sio", mode: "fanout", urls: [instance.url], count: 50, ratePerSec: 0, concurrency: 50, spreadAfter: 20_000, reconnect: false, idPrefix: "sc", timeoutMs: 5_000 });
      strictEqual(r.opened, 50, `generator opened 50 (${JSON.stringify(r.errors)})`);
      const dones: number[] = [];
      fleet.onDone = (seq) => dones.push(seq);
      await fleet.track(1_000, true);
      const pub = await Publisher.connect("sio", instance.url, 100);
      for (let s = 1_000; s < 1_010; s++) pub.publish(s);
      await withTimeout(
        (async () => {
          while (dones.length < 10) await sleep(10);
        })(),
        5_000,
        "completion reports for 10 broadcasts",
      );
      const st = await fleet.stats(true);
      strictEqual(st.frames, 500, "50 clients × 10 broadcasts received");
      pub.close();
    } finally {
      await fleet.stop();
      forgetFleet();
    }
  } finally {
    await instance.stop(3_000);
    forget();
  }
}

export async function runSelfCheck(): Promise<boolean> {
  const checks: Check[] = [
    { name: "engine client vs socket.io-client (in-process server, 100 ms pings, auth, acks, connect_error)", run: inProcessChecks },
    { name: "engine client vs socket.io-client on a real instance; generator and publisher end to end", run: instanceChecks },
  ];
  let failed = 0;
  for (const c of checks) {
    const t0 = performance.now();
    try {
      await c.run();
      process.stdout.write(`ok   ${c.name} (${Math.round(performance.now() - t0)} ms)\n`);
    } catch (err) {
      failed++;
      process.stdout.write(`FAIL ${c.name}: ${(err as Error).message}\n`);
    }
  }
  process.stdout.write(`${checks.length - failed} passed, ${failed} failed\n`);
  return failed === 0;
}
