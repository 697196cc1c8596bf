import { type Socket, io } from "socket.io-client";
import WebSocket from "ws";
import type { InstanceProcess } from "./instance.js";
import type { Stack } from "./stack.js";
import { sleep } from "./timeouts.js";

/**
 * A rolling restart under load, measured from the clients' side: clients hold
 * connections through nginx (Socket.IO over WebSocket and polling, and /ws),
 * a publisher POSTs numbered messages, and the stack replaces its instances
 * one by one. Each client records its connection intervals and what it got.
 */

export interface RollingRestartReport {
  clients: number;
  connectionAttempts: number;
  connectionFailures: number;
  /** The first few failures, connections and publishes. */
  failureSamples: string[];
  published: number;
  publishFailures: number;
  /** Messages received, summed over clients. */
  received: number;
  /** Messages a client should have received (published entirely while it was connected), summed over clients. */
  expected: number;
  /** Of those, how many never arrived. */
  missed: number;
  duplicates: number;
  outOfOrder: number;
  /** Clients whose connection the server closed (forced close or instance exit), and how long each took to be connected again, ms. */
  cuts: number;
  reconnectMs: { p50: number; max: number; count: number };
  /** Cuts still not reconnected at the end. */
  notReconnected: number;
  durationMs: number;
}

interface Interval {
  from: number;
  to: number;
  instance: string | undefined;
  cut: boolean;
}

interface Tracker {
  kind: string;
  instance: string | undefined;
  intervals: Interval[];
  connectedSince: number | undefined;
  cutAt: number | undefined;
  seen: Set<number>;
  last: number;
}

const SEQ = /^seq:(\d+)$/;

/**
 * Connects the clients, starts the publisher, runs `during` (the restarts),
 * then waits for cut clients to come back and the last message to land, and
 * reports.
 */
export async function measureUnderLoad(
  stack: Stack,
  during: () => Promise<void>,
  opts: { clients?: number; publishEveryMs?: number; log?: (line: string) => void } = {},
): Promise<RollingRestartReport> {
  const n = opts.clients ?? 40;
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const trackers: Tracker[] = [];
  const closers: (() => void)[] = [];
  let attempts = 0;
  let failures = 0;
  const failureSamples: string[] = [];
  const reconnects: number[] = [];
  let cuts = 0;
  let duplicates = 0;
  let outOfOrder = 0;

  const fail = (what: string, publish = false) => {
    if (!publish) failures++;
    if (failureSamples.length < 10) failureSamples.push(what);
  };
  const onMessage = (t: Tracker, text: string) => {
    const m = SEQ.exec(text);
    if (!m) return;
    const seq = Number(m[1]);
    if (t.seen.has(seq)) duplicates++;
    else if (seq < t.last) outOfOrder++;
    t.seen.add(seq);
    t.last = Math.max(t.last, seq);
  };
  const opened = (t: Tracker) => {
    const now = Date.now();
    if (t.cutAt !== undefined) {
      reconnects.push(now - t.cutAt);
      t.cutAt = undefined;
    }
    t.connectedSince = now;
    // Order is checked within a connection; a new connection may start anywhere.
    t.last = -1;
  };
  const closed = (t: Tracker, cut: boolean) => {
    const now = Date.now();
    if (t.connectedSince !== undefined) t.intervals.push({ from: t.connectedSince, to: now, instance: t.instance, cut });
    t.connectedSince = undefined;
    if (cut) {
      cuts++;
      t.cutAt = now;
    }
  };

  const ready: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const kind = i % 4 === 3 ? "ws" : i % 4 === 2 ? "socket.io-polling" : "socket.io-websocket";
    const t: Tracker = { kind, instance: undefined, intervals: [], connectedSince: undefined, cutAt: undefined, seen: new Set(), last: -1 };
    trackers.push(t);
    if (kind === "ws") ready.push(wsClient(stack, t));
    else ready.push(ioClient(stack, t, kind === "socket.io-polling" ? ["polling"] : ["websocket"]));
  }

  function ioClient(s: Stack, t: Tracker, transports: ("polling" | "websocket")[]): Promise<void> {
    attempts++;
    const socket: Socket = io(s.url, { transports, forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 1_000, timeout: 5_000 });
    closers.push(() => socket.close());
    socket.io.on("reconnect_attempt", () => attempts++);
    socket.on("connect_error", (err: Error & { data?: { code?: string } }) => {
      fail(`socket.io ${transports[0]}: ${err.message}`);
      // A middleware refusal is not retried by socket.io-client: do it ourselves.
      if (err.data?.code === "DRAINING") setTimeout(() => socket.connect(), 200);
    });
    socket.on("message", (m: { text: string }) => onMessage(t, m.text));
    socket.on("welcome", (w: { instance: string }) => (t.instance = w.instance));
    socket.on("disconnect", (reason) => closed(t, reason !== "io client disconnect"));
    return new Promise((resolve) => {
      socket.on("connect", () => {
        opened(t);
        resolve();
      });
    });
  }

  function wsClient(s: Stack, t: Tracker): Promise<void> {
    let done = false;
    closers.push(() => {
      done = true;
    });
    return new Promise((resolve) => {
      const connect = () => {
        if (done) return;
        attempts++;
        const ws = new WebSocket(`${s.url.replace(/^http/, "ws")}/ws`);
        closers.push(() => ws.close());
        ws.on("open", () => {
          opened(t);
          resolve();
        });
        ws.on("message", (data) => {
          const text = data.toString();
          const welcome = /Instance \[(\S+)\]/.exec(text);
          if (welcome) t.instance = welcome[1];
          else onMessage(t, text);
        });
        ws.on("unexpected-response", (_req, res) => fail(`/ws upgrade answered ${res.statusCode}`));
        ws.on("error", (err) => {
          if (t.connectedSince === undefined) fail(`/ws: ${err.message}`);
        });
        ws.on("close", (code) => {
          const wasOpen = t.connectedSince !== undefined;
          if (wasOpen) closed(t, !done);
          // 1001 at a drain deadline, 1006 if the instance vanished: come back through nginx.
          if (!done) setTimeout(connect, wasOpen ? 50 + Math.random() * 200 : 200);
          void code;
        });
      };
      connect();
    });
  }

  // Every instance process of the run, replaced ones included, for their "forcing shutdown" times.
  const seen = new Set<InstanceProcess>(stack.instances);
  const sampler = setInterval(() => stack.instances.forEach((i) => seen.add(i)), 25);

  await Promise.all(ready);
  log(`${n} clients connected through nginx`);

  // The publisher: numbered messages, one in flight at a time, each timed.
  const publishes: { seq: number; sentAt: number; doneAt: number; ok: boolean }[] = [];
  let publishing = true;
  const publisher = (async () => {
    for (let seq = 0; publishing; seq++) {
      const sentAt = Date.now();
      let ok = false;
      try {
        const res = await fetch(`${stack.url}/broadcast-to-all`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ message: `seq:${seq}` }),
          signal: AbortSignal.timeout(5_000),
        });
        ok = res.ok;
        if (!ok) fail(`publish seq:${seq} answered ${res.status} ${await res.text()}`, true);
        else await res.body?.cancel();
      } catch (err) {
        fail(`publish seq:${seq}: ${(err as Error).message}`, true);
      }
      publishes.push({ seq, sentAt, doneAt: Date.now(), ok });
      await sleep(opts.publishEveryMs ?? 20);
    }
  })();

  try {
    await during();
    // Cut clients come back within a bounded wait.
    const deadline = Date.now() + 15_000;
    while (trackers.some((t) => t.connectedSince === undefined) && Date.now() < deadline) await sleep(50);
    // A few more messages with everyone back, then the last one must reach every connected client.
    const until = publishes.length + 10;
    while (publishes.length < until && Date.now() < deadline) await sleep(20);
  } finally {
    publishing = false;
    await publisher;
  }
  const last = publishes.findLast((p) => p.ok);
  if (last) {
    const deadline = Date.now() + 5_000;
    while (trackers.some((t) => t.connectedSince !== undefined && !t.seen.has(last.seq)) && Date.now() < deadline) await sleep(20);
  }
  const end = Date.now();
  for (const close of closers) close();
  clearInterval(sampler);
  for (const t of trackers) if (t.connectedSince !== undefined) t.intervals.push({ from: t.connectedSince, to: end, instance: t.instance, cut: false });
  // A connection the server cut at a drain deadline ended when the server began
  // closing it, not when the client noticed: messages in between are not owed.
  const forcedAt = [...seen].flatMap((inst) =>
    inst.logs.filter((r) => r.msg.startsWith("forcing shutdown")).map((r) => ({ id: inst.id, at: Date.parse(String(r.time)) })),
  );
  const endOf = (iv: Interval) =>
    iv.cut ? Math.min(iv.to, ...forcedAt.filter((f) => f.id === iv.instance && f.at >= iv.from && f.at <= iv.to).map((f) => f.at)) : iv.to;

  let expected = 0;
  let missed = 0;
  for (const t of trackers) {
    for (const p of publishes) {
      if (!p.ok) continue;
      // Published entirely within one connection of this client: it must have arrived.
      if (t.intervals.some((iv) => iv.from < p.sentAt && p.doneAt < endOf(iv))) {
        expected++;
        if (!t.seen.has(p.seq)) missed++;
      }
    }
  }
  const sorted = [...reconnects].sort((a, b) => a - b);
  return {
    clients: n,
    connectionAttempts: attempts,
    connectionFailures: failures,
    failureSamples,
    published: publishes.filter((p) => p.ok).length,
    publishFailures: publishes.filter((p) => !p.ok).length,
    received: trackers.reduce((sum, t) => sum + t.seen.size, 0),
    expected,
    missed,
    duplicates,
    outOfOrder,
    cuts,
    reconnectMs: { p50: sorted[Math.floor(sorted.length / 2)] ?? 0, max: sorted[sorted.length - 1] ?? 0, count: sorted.length },
    notReconnected: trackers.filter((t) => t.cutAt !== undefined).length,
    durationMs: end - started,
  };
}
