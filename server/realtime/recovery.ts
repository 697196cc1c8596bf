import type { BroadcastDomain } from "../domain/broadcast.js";
import { compareOffsets, parseOffset } from "../domain/history.js";
import type { Envelope, Welcome } from "../protocol.js";

/** What a reconnecting client says it has: the last offset of an epoch. */
export interface Resume {
  epoch: string;
  offset: string;
}

const EPOCH = /^[A-Za-z0-9_-]{1,32}$/;
/** A boundary whose instance never catches up (Redis away) gives up holding after this. */
const CATCH_UP_MS = 5_000;

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
 * A (re)connecting client's start: the welcome (with `recovered` and
 * `replayed`), then its replay, then the boundary releases live traffic.
 * `entitled` says which entries the connection may see (its rooms).
 */
export async function startConnection(opts: {
  domain: BroadcastDomain;
  resume: Resume | undefined;
  limit: number;
  base: Pick<Welcome, "clientId" | "instance" | "commands" | "at">;
  entitled: (e: Envelope) => boolean;
  boundary: ReplayBoundary;
  greet: (welcome: Welcome) => void;
  send: (e: Envelope) => void;
  onError: (err: Error) => void;
}): Promise<void> {
  const { domain, resume, boundary } = opts;
  const head = domain.head();
  const welcome = (recovered: boolean, offset: string | undefined, replayed: number): Welcome => ({
    ...opts.base,
    epoch: domain.head()?.epoch ?? "",
    offset: offset ?? domain.head()?.offset ?? "",
    recovered,
    replayed,
  });
  if (!resume || !head) {
    opts.greet(welcome(false, head?.offset, 0));
    return boundary.replayed(undefined, undefined);
  }
  let result: { entries: Envelope[]; complete: boolean };
  try {
    result = await domain.recover(resume.epoch, resume.offset, opts.limit);
  } catch (err) {
    opts.onError(err as Error);
    opts.greet(welcome(false, undefined, 0));
    return boundary.replayed(undefined, undefined);
  }
  const { entries, complete } = result;
  const sameEpoch = resume.epoch === domain.head()?.epoch;
  const replay = entries.filter(opts.entitled);
  // The welcome's offset is where the client stands before the replay: if the
  // connection drops before the replayed entries arrive, it asks for them again.
  opts.greet(welcome(complete, sameEpoch ? resume.offset : undefined, replay.length));
  for (const e of replay) opts.send(e);
  const last = entries.length > 0 ? offsetOf(entries[entries.length - 1]!) : undefined;
  boundary.replayed(last ?? (sameEpoch ? resume.offset : undefined), domain.head()?.offset);
}
