import { type Socket, io } from "socket.io-client";
import WebSocket from "ws";
import type { Stack } from "./stack.js";
import { sleep } from "./timeouts.js";

/**
 * A rolling restart under load, measured from the clients' side: clients hold
 * connections through nginx (Socket.IO over WebSocket and polling, and /ws
 * with JSON frames), a publisher POSTs numbered messages, and the stack
 * replaces its instances one by one (drained, or SIGKILLed: `killAndReplace`).
 * Every client keeps its place in the history (the epoch of its welcome, the
 * offset of the last broadcast it got) and sends it back on every reconnect,
 * as the service's clients do; each records what it got, in what order, and
 * what every welcome said about recovery.
 */

export type ClientKind = "socket.io-websocket" | "socket.io-polling" | "ws";

/** What recovering clients saw across their reconnects (the bench's drain counts the same). */
export interface RecoveryCounts {
  /** The same broadcast (same offset) received twice by one client. */
  duplicates: number;
  /** A broadcast received after a later one (a lower offset than one the client already had). */
  outOfOrder: number;
  /** Reconnects that sent an offset and epoch, and what their welcomes said. */
  resumes: number;
  recovered: number;
  notRecovered: number;
  /** Broadcasts the welcomes said were replayed, summed. */
  replayed: number;
}

export const noRecoveryCounts = (): RecoveryCounts => ({ duplicates: 0, outOfOrder: 0, resumes: 0, recovered: 0, notRecovered: 0, replayed: 0 });

/** Adds `from`'s counts to `into`'s. */
export function addRecoveryCounts(into: RecoveryCounts, from: RecoveryCounts): void {
  for (const k of Object.keys(noRecoveryCounts()) as (keyof RecoveryCounts)[]) into[k] += from[k];
}

/** A welcome that answered a resume: what it said. */
export function countResume(into: RecoveryCounts, w: { recovered?: boolean; replayed?: number }): void {
  into.resumes++;
  if (w.recovered === true) into.recovered++;
  else into.notRecovered++;
  into.replayed += w.replayed ?? 0;
}

/** Delivery figures of a set of clients, summed over them. */
export interface DeliveryFigures extends RecoveryCounts {
  clients: number;
  /** Broadcasts each should have got (published, answered 200, after its first welcome), summed. */
  owed: number;
  /** Distinct numbered broadcasts received. */
  received: number;
  /** Owed and never received. */
  missed: number;
}

export interface RollingRestartReport {
  clients: number;
  connectionAttempts: number;
  connectionFailures: number;
  /** The first few failures, connections and publishes. */
  failureSamples: string[];
  /** The first few duplicates and out-of-order deliveries, with the welcome before them. */
  anomalySamples: string[];
  published: number;
  publishFailures: number;
  /**
   * Numbered messages that took two places in the history (two offsets): a
   * POST retried by nginx after the instance it reached died mid-request
   * (at-least-once; README "nginx"). Not a duplicate delivery.
   */
  publishedTwice: number;
  /** Messages received, summed over clients (distinct per client). */
  received: number;
  /** Messages a client should have received (published after its first welcome), summed over clients. */
  expected: number;
  /** Of those, how many never arrived, reconnects included. */
  missed: number;
  duplicates: number;
  outOfOrder: number;
  /** Every client. */
  all: DeliveryFigures;
  /** Clients whose connection the server closed or lost at least once (moved to another instance). */
  moved: DeliveryFigures;
  /** The moved clients by transport. */
  movedBy: Record<ClientKind, DeliveryFigures>;
  /** Connections the server closed (forced close or instance exit), and how long each took to be connected again, ms. */
  cuts: number;
  reconnectMs: { p50: number; max: number; count: number };
  /** Cuts still not reconnected at the end. */
  notReconnected: number;
  durationMs: number;
}

/** Orders two history offsets (`<ms>-<seq>`). */
export function compareOffsets(a: string, b: string): number {
  const [am = 0, as = 0] = a.split("-").map(Number);
  const [bm = 0, bs = 0] = b.split("-").map(Number);
  return am !== bm ? am - bm : as - bs;
}

/**
 * Where a client is in the service's history: the epoch of its last welcome
 * and the offset of the last broadcast it got (or the welcome's offset), sent
 * back on every reconnect. `welcome` says whether that reconnect was a resume.
 */
export class Place {
  epoch: string | undefined;
  offset: string | undefined;
  #asked = false;

  /** What to send when (re)connecting; remembers that it was sent. */
  resume(): { offset?: string; epoch?: string } {
    const r = this.offset && this.epoch ? { offset: this.offset, epoch: this.epoch } : {};
    this.#asked = r.offset !== undefined;
    return r;
  }

  /** A welcome: answers whether it answered a resume (then `recovered` means something). */
  welcome(w: { epoch?: string; offset?: string }): boolean {
    const asked = this.#asked;
    this.#asked = false;
    this.epoch = w.epoch || undefined;
    if (w.offset) this.offset = w.offset;
    return asked;
  }

  seen(offset: string | undefined): void {
    if (offset) this.offset = offset;
  }
}

interface Tracker {
  kind: ClientKind;
  place: Place;
  /** When its first welcome arrived: broadcasts published later are owed. */
  welcomedAt: number | undefined;
  connectedSince: number | undefined;
  cutAt: number | undefined;
  cuts: number;
  /** seq -> offset ("" without one). */
  seen: Map<number, string>;
  offsets: Set<string>;
  lastOffset: string | undefined;
  counts: RecoveryCounts;
  /** The last welcome and how many broadcasts came after it: for the anomaly samples. */
  welcome: { at: number; instance?: string; offset?: string; resumed: boolean; recovered?: boolean; replayed?: number; since: number } | undefined;
}

const SEQ = /^seq:(\d+)$/;
const KINDS: ClientKind[] = ["socket.io-websocket", "socket.io-websocket", "socket.io-polling", "ws"];

/**
 * SIGKILLs instance i (no drain: its clients drop at once) and starts its
 * replacement; resolves when the replacement answers /readyz.
 */
export async function killAndReplace(stack: Stack, i: number): Promise<void> {
  const victim = stack.instances[i];
  if (!victim) throw new RangeError(`no instance ${i}`);
  victim.signal("SIGKILL");
  await victim.exited;
  await stack.restartInstance(i);
}

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
  const twice = new Set<number>();

  const fail = (what: string, publish = false) => {
    if (!publish) failures++;
    if (failureSamples.length < 10) failureSamples.push(what);
  };
  const anomalySamples: string[] = [];
  const anomaly = (t: Tracker, what: string) => {
    if (anomalySamples.length >= 10) return;
    const w = t.welcome;
    anomalySamples.push(
      `${t.kind}: ${what}; ${w ? `broadcast #${w.since} after a welcome ${Date.now() - w.at} ms before from ${w.instance} (offset ${w.offset}${w.resumed ? `, resumed: recovered ${w.recovered}, replayed ${w.replayed}` : ", no resume"})` : "before any welcome"}`,
    );
  };
  const onWelcome = (t: Tracker, w: { instance?: string; epoch?: string; offset?: string; recovered?: boolean; replayed?: number }) => {
    t.welcomedAt ??= Date.now();
    const resumed = t.place.welcome(w);
    t.welcome = { at: Date.now(), instance: w.instance, offset: w.offset, resumed, recovered: w.recovered, replayed: w.replayed, since: 0 };
    if (resumed) countResume(t.counts, w);
  };
  /** A broadcast: its text (numbered ones are ours) and its offset (absent with history off). */
  const onBroadcast = (t: Tracker, text: string | undefined, offset: string | undefined) => {
    if (t.welcome) t.welcome.since++;
    if (offset) {
      if (t.offsets.has(offset)) {
        t.counts.duplicates++;
        anomaly(t, `offset ${offset} (${text}) again (last before it ${t.lastOffset})`);
        return;
      }
      if (t.lastOffset !== undefined && compareOffsets(offset, t.lastOffset) < 0) {
        t.counts.outOfOrder++;
        anomaly(t, `offset ${offset} (${text}) after ${t.lastOffset}`);
      } else t.lastOffset = offset;
      t.offsets.add(offset);
      t.place.seen(t.lastOffset);
    }
    const m = SEQ.exec(text ?? "");
    if (!m) return;
    const seq = Number(m[1]);
    const before = t.seen.get(seq);
    if (before !== undefined) {
      // The same text at another offset: published twice, delivered once each.
      if (offset && before !== offset) twice.add(seq);
      else {
        t.counts.duplicates++;
        anomaly(t, `${text} again, without an offset`);
      }
      return;
    }
    t.seen.set(seq, offset ?? "");
  };
  const opened = (t: Tracker) => {
    const now = Date.now();
    if (t.cutAt !== undefined) {
      reconnects.push(now - t.cutAt);
      t.cutAt = undefined;
    }
    t.connectedSince = now;
  };
  const closed = (t: Tracker, cut: boolean) => {
    if (t.connectedSince === undefined) return;
    t.connectedSince = undefined;
    if (cut) {
      cuts++;
      t.cuts++;
      t.cutAt = Date.now();
    }
  };

  const ready: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const kind = KINDS[i % KINDS.length]!;
    const t: Tracker = {
      kind,
      place: new Place(),
      welcomedAt: undefined,
      connectedSince: undefined,
      cutAt: undefined,
      cuts: 0,
      seen: new Map(),
      offsets: new Set(),
      lastOffset: undefined,
      counts: noRecoveryCounts(),
      welcome: undefined,
    };
    trackers.push(t);
    if (kind === "ws") ready.push(wsClient(stack, t));
    else ready.push(ioClient(stack, t, kind === "socket.io-polling" ? ["polling"] : ["websocket"]));
  }

  /** Resolves on its first welcome. */
  function ioClient(s: Stack, t: Tracker, transports: ("polling" | "websocket")[]): Promise<void> {
    attempts++;
    const socket: Socket = io(s.url, {
      transports,
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 1_000,
      timeout: 5_000,
      // Called on every (re)connection: where we are in the history.
      auth: (cb) => cb(t.place.resume()),
    });
    closers.push(() => socket.close());
    socket.io.on("reconnect_attempt", () => attempts++);
    socket.on("connect_error", (err: Error & { data?: { code?: string } }) => {
      fail(`socket.io ${transports[0]}: ${err.message}`);
      // A middleware refusal is not retried by socket.io-client: do it ourselves.
      if (err.data?.code === "DRAINING") setTimeout(() => socket.connect(), 200);
    });
    socket.on("message", (m: { text?: string; offset?: string }) => onBroadcast(t, m.text, m.offset));
    socket.on("notification", (x: { offset?: string }) => onBroadcast(t, undefined, x.offset));
    socket.on("connect", () => opened(t));
    socket.on("disconnect", (reason) => closed(t, reason !== "io client disconnect"));
    return new Promise((resolve) => {
      socket.on("welcome", (w: { instance?: string; epoch?: string; offset?: string; recovered?: boolean; replayed?: number }) => {
        onWelcome(t, w);
        resolve();
      });
    });
  }

  /** /ws?format=json, reconnecting with ?since=&epoch=; resolves on its first welcome. */
  function wsClient(s: Stack, t: Tracker): Promise<void> {
    let done = false;
    closers.push(() => {
      done = true;
    });
    return new Promise((resolve) => {
      const connect = () => {
        if (done) return;
        attempts++;
        const url = new URL(`${s.url.replace(/^http/, "ws")}/ws`);
        url.searchParams.set("format", "json");
        const { offset, epoch } = t.place.resume();
        if (offset && epoch) {
          url.searchParams.set("since", offset);
          url.searchParams.set("epoch", epoch);
        }
        const ws = new WebSocket(url);
        closers.push(() => ws.close());
        ws.on("open", () => opened(t));
        ws.on("message", (data) => {
          let frame: { type?: string; data?: { text?: string; instance?: string; offset?: string; epoch?: string; recovered?: boolean; replayed?: number } };
          try {
            frame = JSON.parse(data.toString()) as typeof frame;
          } catch {
            return fail(`/ws: a frame that is not JSON: ${data.toString().slice(0, 80)}`);
          }
          if (frame.type === "welcome" && frame.data) {
            onWelcome(t, frame.data);
            resolve();
          } else if (frame.type === "message" || frame.type === "notification") {
            onBroadcast(t, frame.type === "message" ? frame.data?.text : undefined, frame.data?.offset);
          }
        });
        ws.on("unexpected-response", (_req, res) => fail(`/ws upgrade answered ${res.statusCode}`));
        ws.on("error", (err) => {
          if (t.connectedSince === undefined) fail(`/ws: ${err.message}`);
        });
        ws.on("close", () => {
          const wasOpen = t.connectedSince !== undefined;
          closed(t, !done);
          // 1001 at a drain deadline, 1006 if the instance vanished: come back through nginx.
          if (!done) setTimeout(connect, wasOpen ? 50 + Math.random() * 200 : 200);
        });
      };
      connect();
    });
  }

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
          headers: { "content-type": "application/json", authorization: `Bearer ${stack.adminToken}` },
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
  // Every client owes what was published after its first welcome; wait (bounded) until the
  // connected ones have it all: replays after the last reconnects may still be on their way.
  const ok = publishes.filter((p) => p.ok);
  const owedTo = (t: Tracker) => (t.welcomedAt === undefined ? [] : ok.filter((p) => p.sentAt > t.welcomedAt!));
  const complete = (t: Tracker) => t.connectedSince === undefined || owedTo(t).every((p) => t.seen.has(p.seq));
  {
    const deadline = Date.now() + 5_000;
    while (!trackers.every(complete) && Date.now() < deadline) await sleep(50);
  }
  const end = Date.now();
  for (const close of closers) close();

  const figures = (ts: Tracker[]): DeliveryFigures => {
    const d: DeliveryFigures = { clients: ts.length, owed: 0, received: 0, missed: 0, ...noRecoveryCounts() };
    for (const t of ts) {
      const owed = owedTo(t);
      d.owed += owed.length;
      d.missed += owed.filter((p) => !t.seen.has(p.seq)).length;
      d.received += t.seen.size;
      addRecoveryCounts(d, t.counts);
    }
    return d;
  };
  const all = figures(trackers);
  const moved = trackers.filter((t) => t.cuts > 0);
  const sorted = [...reconnects].sort((a, b) => a - b);
  return {
    clients: n,
    connectionAttempts: attempts,
    connectionFailures: failures,
    failureSamples,
    anomalySamples,
    published: ok.length,
    publishFailures: publishes.length - ok.length,
    publishedTwice: twice.size,
    received: all.received,
    expected: all.owed,
    missed: all.missed,
    duplicates: all.duplicates,
    outOfOrder: all.outOfOrder,
    all,
    moved: figures(moved),
    movedBy: Object.fromEntries([...new Set(KINDS)].map((k) => [k, figures(moved.filter((t) => t.kind === k))])) as Record<ClientKind, DeliveryFigures>,
    cuts,
    reconnectMs: { p50: sorted[Math.floor(sorted.length / 2)] ?? 0, max: sorted[sorted.length - 1] ?? 0, count: sorted.length },
    notReconnected: trackers.filter((t) => t.cutAt !== undefined).length,
    durationMs: end - started,
  };
}

/** The report's figures as lines of text (the CLI prints them). */
export function describeReport(r: RollingRestartReport): string[] {
  const d = (x: DeliveryFigures) =>
    `${x.clients} clients: owed ${x.owed}, missed ${x.missed}, duplicates ${x.duplicates}, out of order ${x.outOfOrder}; reconnects that resumed ${x.resumes}: recovered:true ${x.recovered}, recovered:false ${x.notRecovered}, ${x.replayed} replayed`;
  return [
    `connection attempts ${r.connectionAttempts}, failures ${r.connectionFailures}`,
    `published ${r.published} (publish failures ${r.publishFailures}; published twice by a retried POST ${r.publishedTwice})`,
    `all clients, ${d(r.all)}`,
    `moved clients, ${d(r.moved)}`,
    ...Object.entries(r.movedBy).map(([k, x]) => `  ${k}: ${d(x)}`),
    `clients cut ${r.cuts}; reconnected p50 ${r.reconnectMs.p50} ms, max ${r.reconnectMs.max} ms; not back ${r.notReconnected}`,
    ...r.anomalySamples.map((a) => `anomaly: ${a}`),
  ];
}
