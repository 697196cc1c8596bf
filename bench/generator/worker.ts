/**
 * One load-generator child: holds up to `capacity` WebSocket connections (its
 * own RLIMIT_NOFILE less a margin), of one of three kinds (baseline server,
 * /ws, Socket.IO through bench/engine-client.ts), and does what the parent
 * orders over IPC. It exits when the parent goes, so it can never outlive a run.
 */
import WebSocket from "ws";
import { fdLimit, openFds } from "../../harness/procfs.js";
import { addRecoveryCounts, countResume, noRecoveryCounts, Place, type RecoveryCounts } from "../../harness/rolling-restart.js";
import { EngineClient, type WelcomeInfo } from "../engine-client.js";
import { nowUs, setEpoch } from "../lib/clock.js";
import { encodeHistogram, type Histogram, newHistogram } from "../lib/hist.js";
import { addressFlood, replayAttack } from "./attacks.js";
import {
  BROADCAST_MARK,
  type ConnectOrder,
  type ConnectResult,
  type Delivery,
  type DeliveryBucket,
  ECHO_MARK,
  ECHO_ROOM,
  type EchoResult,
  type FloodOrder,
  type FloodResult,
  type Kind,
  type Mode,
  type Order,
  type Report,
  type Stats,
} from "./protocol.js";

if (!process.send) throw new Error("bench/generator/worker.ts runs as a forked child of bench/run.ts");
setEpoch(Number(process.env.BENCH_EPOCH_MS));

const send = (report: Report): void => {
  if (process.connected) process.send!(report);
};
// The parent gone (finished, crashed, Ctrl+C): nothing to report to, so go.
process.on("disconnect", () => process.exit(0));
// Ctrl+C reaches the whole process group: let the parent close things in order (it exits on disconnect otherwise).
process.on("SIGINT", () => undefined);

/** Descriptors kept free for stdio, IPC, libuv and DNS-less sockets of our own. */
const FD_MARGIN = 200;
const limit = fdLimit();
const capacity = Math.max(0, limit - openFds() - FD_MARGIN);

/** Counters of one group of clients (a target's). */
interface Group {
  open: number;
  openFanout: number;
  frames: number;
  latency: Histogram;
  drops: number;
}

const groups = new Map<string, Group>();
function groupNamed(name: string): Group {
  let g = groups.get(name);
  if (!g) groups.set(name, (g = { open: 0, openFanout: 0, frames: 0, latency: newHistogram(), drops: 0 }));
  return g;
}

interface Client {
  group: Group;
  groupName: string;
  kind: Kind;
  mode: Mode;
  index: number;
  url: string;
  localAddress: string | undefined;
  conn: WebSocket | EngineClient | undefined;
  open: boolean;
  /** It was open once (a failed connect never was). */
  wasOpen: boolean;
  /** We are closing it: no reconnect, not a drop. */
  closing: boolean;
  reconnect: boolean;
  /** Socket.IO recovery (ConnectOrder.recover): where it is in the history, kept across its connections. */
  place: Place | undefined;
  /** With recovery: the broadcasts it got since `track`, to tell a duplicate from one that came late. */
  seen: Set<number> | undefined;
  /** Instance that owned the Socket.IO session (sid prefix), for the drain report. */
  instance: string | undefined;
  // Delivery since `track`:
  got: number;
  skipped: number;
  /** Duplicates; with recovery also out of order and what its welcomes said. */
  counts: RecoveryCounts;
  lastSeq: number;
  disconnected: boolean;
  movedFrom: string | undefined;
  closedAtUs: number;
  attempts: number;
  /** WebSocket close code of the last close (the flood counts why the server cut it). */
  closeCode: number | undefined;
}

let clients: Client[] = [];
let openTotal = 0;
let connecting = 0;
let failedTotal = 0;

/** Never reset: the live rate in the progress line. */
let framesEver = 0;
let trackFrom = Number.MAX_SAFE_INTEGER;
let completion = false;
const seqs = new Map<number, { n: number; last: number }>();

let reconnects = 0;
let reconnectFailures = 0;
let reconnectErrors: Record<string, number> = {};
let reconnectHist = newHistogram();
let firstDisconnectUs: number | undefined;
let lastReconnectUs: number | undefined;
let pendingReconnects = 0;

// Echo round trips of /ws and the baseline come back with their send time in the text.
let echoHist = newHistogram();
let echoAnswered = 0;

const BMARK = Buffer.from(BROADCAST_MARK);
const EMARK = Buffer.from(ECHO_MARK);
const BAR = 0x7c; // '|'

let parsePos = 0;
/** Reads decimal digits at `pos` up to a '|'; leaves `parsePos` after the '|'. */
function readInt(buf: Buffer, pos: number): number {
  let n = 0;
  let c = buf[pos];
  while (c !== undefined && c !== BAR) {
    n = n * 10 + (c - 48);
    c = buf[++pos];
  }
  parsePos = pos + 1;
  return n;
}

function onData(client: Client, data: Buffer): void {
  if (client.mode === "echo") {
    const at = data.indexOf(EMARK);
    if (at < 0) return;
    const sent = readInt(data, at + EMARK.length);
    echoHist.recordValue(Math.max(1, nowUs() - sent));
    echoAnswered++;
    return;
  }
  const at = data.indexOf(BMARK);
  if (at < 0) return;
  const now = nowUs();
  const seq = readInt(data, at + BMARK.length);
  const published = readInt(data, parsePos);
  const g = client.group;
  g.latency.recordValue(Math.max(1, now - published));
  g.frames++;
  framesEver++;
  if (seq < trackFrom) return;
  if (client.seen?.has(seq)) {
    client.counts.duplicates++;
  } else if (seq > client.lastSeq) {
    if (seq > client.lastSeq + 1) client.skipped += seq - client.lastSeq - 1;
    client.got++;
    client.lastSeq = seq;
    client.seen?.add(seq);
  } else if (client.seen) {
    // Jumped over earlier, here now: late, not lost.
    client.seen.add(seq);
    client.got++;
    client.skipped--;
    client.counts.outOfOrder++;
  } else {
    client.counts.duplicates++;
  }
  if (!completion) return;
  let s = seqs.get(seq);
  if (!s) seqs.set(seq, (s = { n: 0, last: 0 }));
  s.n++;
  s.last = now;
  if (s.n >= g.openFanout) {
    send({ type: "done", seq, last: now });
    seqs.delete(seq);
  }
}

/** Source addresses past the first `spreadAfter` connections to one URL. */
const SPREAD_ADDRESSES = 60;

function sourceAddress(order: ConnectOrder, index: number): string | undefined {
  const perUrl = Math.floor(index / order.urls.length);
  if (perUrl < order.spreadAfter) return undefined;
  // Round-robin over 127.0.0.2–61. A bound socket takes its port on that address for every
  // destination (and TIME_WAIT keeps it a minute), so spread thin rather than fill one.
  return `127.0.0.${2 + (index % SPREAD_ADDRESSES)}`;
}

function wsUrl(kind: Kind, mode: Mode, base: string, id: string): string {
  const u = base.replace(/^http/, "ws").replace(/\/$/, "");
  if (kind === "raw") return mode === "echo" ? `${u}/echo` : `${u}/`;
  return mode === "echo" ? `${u}/ws/${encodeURIComponent(id)}` : `${u}/ws`;
}

/** Opens one connection; resolves true once it may be used. */
function open(client: Client, order: Pick<ConnectOrder, "idPrefix" | "timeoutMs">): Promise<true | Error> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (r: true | Error) => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const onOpen = () => {
      client.open = true;
      client.wasOpen = true;
      openTotal++;
      client.group.open++;
      if (client.mode === "fanout") client.group.openFanout++;
      settle(true);
    };
    const onClose = (code?: number) => {
      client.closeCode = code;
      // Socket.IO: `ready` rejects with the reason (an HTTP status, a connect_error, …).
      if (!client.open) return client.kind === "sio" ? undefined : settle(new Error("closed while connecting"));
      client.open = false;
      openTotal--;
      client.group.open--;
      if (client.mode === "fanout") client.group.openFanout--;
      if (client.closing) return;
      client.group.drops++;
      if (client.reconnect) scheduleReconnect(client, order);
    };
    if (client.kind === "sio") {
      const c = new EngineClient(client.url, {
        localAddress: client.localAddress,
        timeoutMs: order.timeoutMs,
        onRaw: (data) => onData(client, data),
        onClose,
        ...(client.place
          ? {
              place: client.place,
              onWelcome: (w: WelcomeInfo, resumed: boolean) => {
                if (resumed) countResume(client.counts, w);
              },
            }
          : {}),
      });
      client.conn = c;
      c.ready.then(
        () => {
          client.instance = c.sid?.split(".")[0];
          onOpen();
        },
        (err: Error) => settle(err),
      );
    } else {
      const id = `${order.idPrefix}-${client.index}`;
      const ws = new WebSocket(wsUrl(client.kind, client.mode, client.url, id), {
        perMessageDeflate: false,
        skipUTF8Validation: true,
        handshakeTimeout: order.timeoutMs,
        ...(client.localAddress ? { localAddress: client.localAddress } : {}),
      });
      client.conn = ws;
      ws.on("open", onOpen);
      ws.on("message", (data: Buffer) => onData(client, data));
      ws.on("error", (err) => settle(err));
      ws.on("close", onClose);
    }
  });
}

function scheduleReconnect(client: Client, order: Pick<ConnectOrder, "idPrefix" | "timeoutMs">): void {
  const now = nowUs();
  if (!client.disconnected) {
    client.disconnected = true;
    client.movedFrom = client.instance;
  }
  client.closedAtUs = client.attempts === 0 ? now : client.closedAtUs;
  firstDisconnectUs ??= now;
  pendingReconnects++;
  // socket.io-client's defaults: 1 s, randomised by ±50 %, doubling to 5 s.
  const base = Math.min(5_000, 1_000 * 2 ** client.attempts);
  const delay = base * (0.5 + Math.random());
  setTimeout(() => {
    if (client.closing) {
      pendingReconnects--;
      return;
    }
    client.attempts++;
    void open(client, order).then((r) => {
      pendingReconnects--;
      if (r === true) {
        reconnects++;
        reconnectHist.recordValue(Math.max(1, nowUs() - client.closedAtUs));
        lastReconnectUs = nowUs();
        client.attempts = 0;
        return;
      }
      reconnectFailures++;
      const key = r.message.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "<addr>").slice(0, 120);
      reconnectErrors[key] = (reconnectErrors[key] ?? 0) + 1;
      if (client.attempts < 20) scheduleReconnect(client, order);
    });
  }, delay).unref();
}

/** A client record, in `clients` (not connected yet: `open()` it). */
function newClient(o: Pick<Client, "groupName" | "kind" | "mode" | "index" | "url" | "localAddress" | "reconnect"> & { recover: boolean }): Client {
  const { recover, ...rest } = o;
  const client: Client = {
    ...rest,
    place: recover && o.kind === "sio" ? new Place() : undefined,
    seen: undefined,
    counts: noRecoveryCounts(),
    group: groupNamed(o.groupName),
    closing: false,
    conn: undefined,
    open: false,
    wasOpen: false,
    instance: undefined,
    got: 0,
    skipped: 0,
    lastSeq: -1,
    disconnected: false,
    movedFrom: undefined,
    closedAtUs: 0,
    attempts: 0,
    closeCode: undefined,
  };
  clients.push(client);
  return client;
}

async function connect(order: ConnectOrder): Promise<ConnectResult> {
  if (openTotal + connecting + order.count > capacity) {
    throw new Error(`child ${process.pid}: ${openTotal + order.count} connections asked, capacity ${capacity} (fd limit ${limit})`);
  }
  const hist = newHistogram();
  const errors: Record<string, number> = {};
  let launched = 0;
  let settled = 0;
  let inflight = 0;
  let opened = 0;
  let failed = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = order.ratePerSec > 0 ? Math.min(order.count, Math.floor(((performance.now() - t0) / 1000) * order.ratePerSec) + 1) : order.count;
      while (launched < due && inflight < order.concurrency) {
        const index = order.startIndex + launched++;
        const client = newClient({
          groupName: order.group,
          kind: order.kind,
          mode: order.mode,
          index,
          url: order.urls[index % order.urls.length]!,
          localAddress: sourceAddress(order, index),
          reconnect: order.reconnect,
          recover: order.recover ?? false,
        });
        inflight++;
        connecting++;
        const started = nowUs();
        void open(client, order).then((r) => {
          inflight--;
          connecting--;
          settled++;
          if (r === true) {
            opened++;
            hist.recordValue(Math.max(1, nowUs() - started));
          } else {
            failed++;
            failedTotal++;
            const key = r.message.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "<addr>").slice(0, 120);
            errors[key] = (errors[key] ?? 0) + 1;
          }
          if (settled === order.count) {
            clearInterval(timer);
            resolve();
          } else if (inflight < order.concurrency) {
            tick();
          }
        });
      }
    };
    const timer = setInterval(tick, 5);
    tick();
    if (order.count === 0) {
      clearInterval(timer);
      resolve();
    }
  });
  return { opened, failed, errors, connectHist: encodeHistogram(hist), elapsedMs: performance.now() - t0 };
}

function sendText(client: Client, text: string): void {
  const c = client.conn;
  if (!c || !client.open) return;
  if (c instanceof EngineClient) c.sendRaw(text);
  else c.send(text);
}

async function echo(ratePerSec: number, durationMs: number, payloadBytes: number, group?: string): Promise<EchoResult> {
  const echoers = clients.filter((c) => c.mode === "echo" && c.open && (group === undefined || c.groupName === group));
  echoHist = newHistogram();
  echoAnswered = 0;
  let sent = 0;
  let errors = 0;
  let acked = 0;
  const pad = "x".repeat(Math.max(0, payloadBytes - 24));
  const t0 = performance.now();
  let next = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - t0;
      if (elapsed >= durationMs || echoers.length === 0) {
        clearInterval(timer);
        resolve();
        return;
      }
      const due = Math.floor((elapsed / 1000) * ratePerSec);
      while (sent < due) {
        const client = echoers[next++ % echoers.length]!;
        const sentAt = nowUs();
        const text = `${ECHO_MARK}${sentAt}|${pad}`;
        sent++;
        if (client.kind === "sio") {
          (client.conn as EngineClient).emitWithAck("message", { text, room: ECHO_ROOM }).then((args) => {
            const answer = args[0] as { ok?: boolean } | undefined;
            if (answer?.ok) {
              acked++;
              echoHist.recordValue(Math.max(1, nowUs() - sentAt));
            } else {
              errors++;
            }
          });
        } else {
          sendText(client, text);
        }
      }
    }, 5);
  });
  // Answers still on their way: wait a little (bounded).
  const deadline = performance.now() + 3_000;
  while (performance.now() < deadline && acked + echoAnswered + errors < sent) await new Promise((r) => setTimeout(r, 20));
  return { sent, answered: acked + echoAnswered, errors, rttHist: encodeHistogram(echoHist) };
}

/** Unsent bytes above which the flood waits for its socket to drain (it never queues without bound). */
const FLOOD_HIGH_WATER = 256 * 1024;
/** Frames sent before the flood yields to the event loop. */
const FLOOD_BATCH = 1_000;

/**
 * An abusive client (see FloodOrder): sends as fast as the socket drains,
 * reconnects at once when cut (after 50 ms when a connect fails), stops at
 * the deadline.
 */
async function flood(order: FloodOrder): Promise<FloodResult> {
  const r: FloodResult = { sent: 0, connects: 0, connectFailures: 0, connectErrors: {}, closedByServer: {}, elapsedMs: 0 };
  // The Engine.IO/Socket.IO packet of a `message` event, encoded once.
  const frame = order.kind === "sio" ? `42${JSON.stringify(["message", order.text])}` : order.text;
  const t0 = performance.now();
  const deadline = t0 + order.durationMs;
  for (let index = 0; performance.now() < deadline; index++) {
    const client = newClient({
      groupName: order.group,
      kind: order.kind,
      mode: "idle",
      index,
      url: order.url,
      localAddress: undefined,
      reconnect: false,
      recover: false,
    });
    const opened = await open(client, { idPrefix: order.group, timeoutMs: Math.min(order.timeoutMs, Math.max(100, deadline - performance.now())) });
    if (opened !== true) {
      client.closing = true;
      client.conn?.terminate();
      clients = clients.filter((c) => c !== client);
      // Cut short by the deadline: not a refusal.
      if (performance.now() >= deadline) break;
      r.connectFailures++;
      const key = opened.message.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "<addr>").slice(0, 120);
      r.connectErrors[key] = (r.connectErrors[key] ?? 0) + 1;
      await new Promise((res) => setTimeout(res, 50));
      continue;
    }
    r.connects++;
    const ws = client.conn instanceof EngineClient ? client.conn.ws : client.conn!;
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        if (!client.open || performance.now() >= deadline) return resolve();
        let n = 0;
        while (n < FLOOD_BATCH && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < FLOOD_HIGH_WATER) {
          ws.send(frame);
          n++;
        }
        r.sent += n;
        // A full batch: yield and go on; a full socket (or one closing): wait a little.
        if (n === FLOOD_BATCH) setImmediate(pump);
        else setTimeout(pump, 1);
      };
      pump();
    });
    if (client.open) {
      client.closing = true;
      client.conn?.terminate();
    } else {
      const code = String(client.closeCode ?? "?");
      r.closedByServer[code] = (r.closedByServer[code] ?? 0) + 1;
    }
    clients = clients.filter((c) => c !== client);
  }
  r.elapsedMs = performance.now() - t0;
  return r;
}

async function closeAll(group?: string): Promise<void> {
  const closing = clients.filter((c) => group === undefined || c.groupName === group);
  for (const c of closing) {
    c.closing = true;
    c.conn?.terminate();
  }
  const deadline = performance.now() + 5_000;
  while (closing.some((c) => c.open) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  clients = clients.filter((c) => !c.closing);
  seqs.clear();
  if (group === undefined) groups.clear();
  else groups.delete(group);
}

function stats(reset: boolean, group?: string): Stats {
  const chosen = group === undefined ? [...groups.values()] : [groupNamed(group)];
  const latency = newHistogram();
  for (const g of chosen) latency.add(g.latency);
  const s: Stats = {
    open: chosen.reduce((n, g) => n + g.open, 0),
    frames: chosen.reduce((n, g) => n + g.frames, 0),
    latencyHist: encodeHistogram(latency),
    drops: chosen.reduce((n, g) => n + g.drops, 0),
  };
  if (reset) {
    for (const g of chosen) {
      g.frames = 0;
      g.latency = newHistogram();
      g.drops = 0;
    }
  }
  return s;
}

const emptyBucket = (): DeliveryBucket => ({ clients: 0, received: 0, skipped: 0, sumLastSeq: 0, ...noRecoveryCounts() });

function delivery(group?: string): Delivery {
  const d: Delivery = {
    stayed: emptyBucket(),
    moved: emptyBucket(),
    movedFrom: {},
    reconnects,
    reconnectFailures,
    reconnectErrors,
    reconnectHist: encodeHistogram(reconnectHist),
    firstDisconnectUs,
    lastReconnectUs,
    open: openTotal,
    pendingReconnects,
    receivedBy: {},
    receivedByNotOpen: 0,
    closed: 0,
  };
  for (const c of clients) {
    if (group !== undefined && c.groupName !== group) continue;
    if (c.open) d.receivedBy[c.got] = (d.receivedBy[c.got] ?? 0) + 1;
    else d.receivedByNotOpen += c.got;
    if (!c.open && c.wasOpen) d.closed++;
    const bucket = c.disconnected ? d.moved : d.stayed;
    bucket.clients++;
    bucket.received += c.got;
    bucket.skipped += c.skipped;
    bucket.sumLastSeq += c.lastSeq;
    addRecoveryCounts(bucket, c.counts);
    if (c.disconnected) d.movedFrom[c.movedFrom ?? "?"] = (d.movedFrom[c.movedFrom ?? "?"] ?? 0) + 1;
  }
  return d;
}

function track(fromSeq: number, withCompletion: boolean, group?: string): void {
  trackFrom = fromSeq;
  completion = withCompletion;
  seqs.clear();
  for (const c of clients) {
    if (group !== undefined && c.groupName !== group) continue;
    c.got = 0;
    c.skipped = 0;
    c.counts = noRecoveryCounts();
    c.seen = c.place ? new Set() : undefined;
    c.lastSeq = fromSeq - 1;
    c.disconnected = false;
    c.movedFrom = undefined;
  }
  reconnects = 0;
  reconnectFailures = 0;
  reconnectErrors = {};
  reconnectHist = newHistogram();
  firstDisconnectUs = undefined;
  lastReconnectUs = undefined;
}

async function handle(order: Order): Promise<unknown> {
  switch (order.op) {
    case "connect":
      return connect(order);
    case "track":
      return track(order.fromSeq, order.completion, order.group);
    case "stats":
      return stats(order.reset, order.group);
    case "echo":
      return echo(order.ratePerSec, order.durationMs, order.payloadBytes, order.group);
    case "delivery":
      return delivery(order.group);
    case "close":
      return closeAll(order.group);
    case "flood":
      return flood(order);
    case "replay":
      return replayAttack(order);
    case "addressFlood":
      return addressFlood(order);
    case "exit":
      await closeAll();
      setImmediate(() => process.exit(0));
      return undefined;
  }
}

process.on("message", (msg: { id: number; order: Order }) => {
  handle(msg.order).then(
    (result) => send({ type: "reply", id: msg.id, result: result ?? null }),
    (err: Error) => send({ type: "reply", id: msg.id, result: null, error: err.message }),
  );
});

const beat = setInterval(() => send({ type: "beat", open: openTotal, frames: framesEver, failed: failedTotal, connecting }), 500);
beat.unref();

send({ type: "ready", capacity });
