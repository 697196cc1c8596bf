import type { LimitFunction } from "p-limit";
import type { BroadcastDomain } from "../domain/broadcast.js";
import { type ReadBudget, type Replay, compareOffsets, parseOffset } from "../domain/history.js";
import type { Envelope, RecoveryReason, Welcome } from "../protocol.js";
import { withTimeout } from "../timeout.js";

/** What a reconnecting client says it has: the last offset of an epoch. */
export interface Resume {
  epoch: string;
  offset: string;
}

const EPOCH = /^[A-Za-z0-9_-]{1,32}$/;
/** A boundary whose instance never catches up (Redis away) gives up holding after this. */
const CATCH_UP_MS = 5_000;
/** A replay's read from the history gives up after this (the client is told recovered: false, UNAVAILABLE). */
const READ_TIMEOUT_MS = 3_000;
/** How often a paced replay looks whether its client has read enough to go on. */
const PACE_POLL_MS = 10;

/**
 * What one instance spends on replays: each reads at most `budget` (entries
 * and bytes), `slots` runs a few at a time (read and sent), and a replay
 * sends while its client's unsent bytes stay under `paceBytes`, waiting for
 * the client to read the rest, for at most `stallMs` before it is cut.
 */
export interface ReplayPolicy {
  budget: ReadBudget;
  slots: LimitFunction;
  paceBytes: number;
  stallMs: number;
  /** Counts each recovery's outcome (`recovered`, or the reason it is not). */
  outcome(outcome: "recovered" | RecoveryReason): void;
}

/** A client's resume request (Socket.IO `auth`, /ws `?since=&epoch=`), or undefined: total, never throws. */
export function parseResume(epoch: unknown, offset: unknown): Resume | undefined {
  const o = parseOffset(offset);
  return o !== undefined && typeof epoch === "string" && EPOCH.test(epoch) ? { epoch, offset: o } : undefined;
}

const offsetOf = (e: Envelope): string | undefined => (e.event.data as { offset?: string }).offset;

/**
 * The replay-to-live boundary of one connection. From the moment it
 * connects, its gateway hands live broadcasts to `hold` instead of sending
 * them. The replay reads the history up to some offset `seen`; live resumes
 * once this instance has itself delivered `seen` (with Redis, its live stream
 * may lag the history it just read), and only what comes after `seen` is
 * sent. Nothing twice, nothing missed, in offset order.
 */
export class ReplayBoundary {
  #held: Envelope[] = [];
  /** Set once the replay is out: live resumes when delivery reaches it. */
  #until: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #released = false;

  constructor(
    private readonly send: (e: Envelope) => void,
    private readonly onRelease: () => void,
  ) {}

  /** A live broadcast for this connection while the boundary holds. */
  hold(e: Envelope): void {
    this.#held.push(e);
    const o = offsetOf(e);
    if (this.#until !== undefined && o !== undefined && compareOffsets(o, this.#until) >= 0) this.#release();
  }

  /** The replay is out; `seen` is the last offset it covered, `head` the last this instance delivered. */
  replayed(seen: string | undefined, head: string | undefined): void {
    // What the replay covered is never sent again, whenever live resumes.
    this.#until = seen;
    if (seen === undefined || head === undefined || compareOffsets(head, seen) >= 0) return this.#release();
    this.#timer = setTimeout(() => this.#release(), CATCH_UP_MS);
    this.#timer.unref();
  }

  /** The connection is gone: nothing more to send. */
  drop(): void {
    this.#released = true;
    clearTimeout(this.#timer);
    this.#held = [];
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    clearTimeout(this.#timer);
    const until = this.#until;
    for (const e of this.#held) {
      const o = offsetOf(e);
      if (until === undefined || o === undefined || compareOffsets(o, until) > 0) this.send(e);
    }
    this.#held = [];
    this.onRelease();
  }
}

/**
 * A (re)connecting client's start: the welcome (with `recovered`, `replayed`
 * and why not), then its replay, paced to what the client reads, then the
 * boundary releases live traffic. `entitled` says which entries the
 * connection may see (its rooms).
 */
export async function startConnection(opts: {
  domain: BroadcastDomain;
  resume: Resume | undefined;
  policy: ReplayPolicy;
  base: Pick<Welcome, "clientId" | "user" | "rooms" | "instance" | "commands" | "at">;
  entitled: (e: Envelope) => boolean;
  boundary: ReplayBoundary;
  greet: (welcome: Welcome) => void;
  send: (e: Envelope) => void;
  /** Bytes queued here for the client, unsent. */
  queued: () => number;
  /** False once the connection is gone. */
  open: () => boolean;
  /** Cuts a client that does not read its replay. */
  cut: () => void;
  onError: (err: Error) => void;
}): Promise<void> {
  const { domain, resume, boundary, policy } = opts;
  const head = domain.head();
  const welcome = (recovered: boolean, offset: string | undefined, replayed: number, reason?: RecoveryReason): Welcome => ({
    ...opts.base,
    epoch: domain.head()?.epoch ?? "",
    offset: offset ?? domain.head()?.offset ?? "",
    recovered,
    replayed,
    ...(reason ? { reason } : {}),
  });
  if (!resume || !head) {
    opts.greet(welcome(false, head?.offset, 0));
    return boundary.replayed(undefined, undefined);
  }
  await policy.slots(async () => {
    if (!opts.open()) return;
    let result: Replay;
    try {
      result = await withTimeout(domain.recover(resume.epoch, resume.offset, policy.budget), READ_TIMEOUT_MS, "the history");
    } catch (err) {
      opts.onError(err as Error);
      policy.outcome("UNAVAILABLE");
      opts.greet(welcome(false, undefined, 0, "UNAVAILABLE"));
      return boundary.replayed(undefined, undefined);
    }
    const { entries, complete, reason } = result;
    policy.outcome(complete ? "recovered" : (reason ?? "UNAVAILABLE"));
    // A future offset is no place to stand: the client starts at the head.
    const sameEpoch = resume.epoch === domain.head()?.epoch && reason !== "FUTURE_OFFSET";
    const replay = entries.filter(opts.entitled);
    // The welcome's offset is where the client stands before the replay: if the
    // connection drops before the replayed entries arrive, it asks for them again.
    opts.greet(welcome(complete, sameEpoch ? resume.offset : undefined, replay.length, complete ? undefined : reason));
    for (const e of replay) {
      if (!opts.open()) return boundary.drop();
      opts.send(e);
      if (opts.queued() > policy.paceBytes && !(await drained(opts.queued, opts.open, policy))) return opts.cut();
    }
    const last = entries.length > 0 ? offsetOf(entries[entries.length - 1]!) : undefined;
    boundary.replayed(last ?? (sameEpoch ? resume.offset : undefined), domain.head()?.offset);
  });
}

/** Waits until the client has read its queue down to half the pace; false when it stalls past `stallMs` (or left). */
async function drained(queued: () => number, open: () => boolean, policy: ReplayPolicy): Promise<boolean> {
  const deadline = performance.now() + policy.stallMs;
  while (open() && queued() > policy.paceBytes / 2) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, PACE_POLL_MS));
  }
  return open();
}
