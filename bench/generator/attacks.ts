import type net from "node:net";
import { sleep } from "../../harness/timeouts.js";
import { bareUpgrade, firstFrameText, maskedTextFrame } from "./bare-ws.js";
import type { AddressFloodOrder, AddressFloodResult, ReplayOrder, ReplayResult } from "./protocol.js";

/**
 * The abuse scenario's two attackers through nginx, run by a load-generator
 * child of their own: the replay attacker (a history replay it never reads)
 * and the address flood (many paced senders from one address). Both speak
 * WebSocket on bare sockets (bare-ws.ts).
 */

/** What the bench reads of a welcome. */
interface WelcomeData {
  recovered?: unknown;
  replayed?: unknown;
  reason?: unknown;
}

/** Unsent bytes above which a flood connection skips its next message rather than queue it. */
const HIGH_WATER = 256 * 1024;
/** Messages a flood connection may send in one tick when its timer came late; more are skipped. */
const CATCH_UP = 3;

const bump = (counts: Record<string, number>, key: string) => {
  counts[key] = (counts[key] ?? 0) + 1;
};
const failure = (status: number | undefined, error: string | undefined) => (status !== undefined ? `HTTP ${status}` : (error ?? "?"));

/** The welcome (the first frame in JSON mode) off a paused upgraded socket; the socket is paused again once it has come. */
function readWelcome(socket: net.Socket, rest: Buffer, timeoutMs: number): Promise<WelcomeData | undefined> {
  return new Promise((resolve) => {
    let buf = rest;
    let timer: NodeJS.Timeout | undefined;
    const finish = (w: WelcomeData | undefined) => {
      clearTimeout(timer);
      socket.removeListener("data", onData);
      socket.removeListener("close", onClose);
      socket.pause();
      resolve(w);
    };
    const tryParse = (): boolean => {
      const text = firstFrameText(buf);
      if (text === undefined) return false;
      try {
        const frame = JSON.parse(text) as { type?: unknown; data?: WelcomeData };
        finish(frame.type === "welcome" ? (frame.data ?? {}) : undefined);
      } catch {
        finish(undefined);
      }
      return true;
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      tryParse();
    };
    const onClose = () => finish(undefined);
    if (tryParse()) return;
    timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.resume();
  });
}

/** See ReplayOrder: one connection at a time, each reading nothing past its welcome. */
export async function replayAttack(o: ReplayOrder): Promise<ReplayResult> {
  const r: ReplayResult = {
    requests: 0,
    upgraded: 0,
    refused: {},
    failed: {},
    recovered: 0,
    replayed: 0,
    replayedMax: 0,
    reasons: {},
    noWelcome: 0,
    elapsedMs: 0,
  };
  const query = new URLSearchParams({ format: "json", since: o.since, epoch: o.epoch });
  const url = `${o.url.replace(/\/$/, "")}/ws?${query}`;
  const gapMs = o.durationMs / Math.max(1, o.requests);
  const t0 = performance.now();
  let held: net.Socket | undefined;
  try {
    for (let k = 0; k < o.requests; k++) {
      const wait = t0 + k * gapMs - performance.now();
      if (wait > 0) await sleep(wait);
      // Reconnecting: the last one is let go, unread.
      held?.destroy();
      held = undefined;
      r.requests++;
      const up = await bareUpgrade(url, { localAddress: o.localAddress, timeoutMs: o.timeoutMs });
      if (!up.socket) {
        bump(up.status !== undefined ? r.refused : r.failed, failure(up.status, up.error));
        continue;
      }
      r.upgraded++;
      held = up.socket;
      const welcome = await readWelcome(up.socket, up.rest, o.timeoutMs);
      if (!welcome) {
        r.noWelcome++;
        continue;
      }
      if (welcome.recovered === true) r.recovered++;
      const replayed = typeof welcome.replayed === "number" ? welcome.replayed : 0;
      r.replayed += replayed;
      r.replayedMax = Math.max(r.replayedMax, replayed);
      if (typeof welcome.reason === "string") bump(r.reasons, welcome.reason);
    }
    const left = t0 + o.durationMs - performance.now();
    if (left > 0) await sleep(left);
  } finally {
    held?.destroy();
  }
  r.elapsedMs = Math.round(performance.now() - t0);
  return r;
}

/** See AddressFloodOrder: every connection paced on its own timer, offset from the others so the address sends evenly. */
export async function addressFlood(o: AddressFloodOrder): Promise<AddressFloodResult> {
  const r: AddressFloodResult = {
    connections: o.connections,
    connects: 0,
    connectFailures: 0,
    connectErrors: {},
    sent: 0,
    skipped: 0,
    closedByServer: 0,
    openMax: 0,
    elapsedMs: 0,
  };
  const frame = maskedTextFrame(o.text);
  const url = `${o.url.replace(/\/$/, "")}/ws`;
  const everyMs = 1000 / o.ratePerSec;
  const t0 = performance.now();
  const deadline = t0 + o.durationMs;
  let open = 0;

  /** Sends on `socket` at the pace until it closes ("closed") or the time is up ("deadline"). */
  const pump = (socket: net.Socket, offsetMs: number) =>
    new Promise<"closed" | "deadline">((resolve) => {
      const start = performance.now() + offsetMs;
      let due = 0;
      const tick = () => {
        const now = performance.now();
        if (now >= deadline) return finish("deadline");
        const owed = now < start ? 0 : Math.floor((now - start) / everyMs) + 1;
        let n = 0;
        while (due < owed && n < CATCH_UP && socket.writableLength < HIGH_WATER) {
          socket.write(frame);
          due++;
          n++;
        }
        r.sent += n;
        if (due < owed) {
          r.skipped += owed - due;
          due = owed;
        }
      };
      const timer = setInterval(tick, Math.max(1, Math.min(10, everyMs / 2)));
      const finish = (why: "closed" | "deadline") => {
        clearInterval(timer);
        socket.removeListener("close", onClose);
        resolve(why);
      };
      const onClose = () => finish("closed");
      socket.once("close", onClose);
      tick();
    });

  const connection = async (i: number): Promise<void> => {
    while (performance.now() < deadline) {
      const up = await bareUpgrade(url, { localAddress: o.localAddress, timeoutMs: Math.min(o.timeoutMs, Math.max(100, deadline - performance.now())) });
      if (!up.socket) {
        // Cut short by the deadline: not a refusal.
        if (performance.now() >= deadline) break;
        r.connectFailures++;
        bump(r.connectErrors, failure(up.status, up.error));
        await sleep(50);
        continue;
      }
      r.connects++;
      r.openMax = Math.max(r.openMax, ++open);
      const socket = up.socket;
      // Whatever comes (every broadcast) is read and dropped unparsed.
      socket.on("data", () => undefined);
      socket.resume();
      const why = await pump(socket, (i / o.connections) * everyMs);
      open--;
      if (why === "closed") r.closedByServer++;
      else socket.destroy();
    }
  };
  await Promise.all(Array.from({ length: o.connections }, (_, i) => connection(i)));
  r.elapsedMs = Math.round(performance.now() - t0);
  return r;
}
