import { randomBytes } from "node:crypto";
import { skippedPublishes } from "../cluster/outage.js";
import type { RedisConnection } from "../cluster/redis.js";
import type { Logger } from "../logger.js";
import type { Envelope, RecoveryReason } from "../protocol.js";

/**
 * The broadcast domain's one ordered history. Every broadcast gets an offset
 * (`<ms>-<seq>`, a Redis stream entry id) before any client sees it, and every
 * instance delivers in offset order, so a client's last offset says exactly
 * what it has. An epoch names the history's incarnation: a Redis restart that
 * lost it (or a lone instance's restart) changes it, so a stale offset is
 * detected rather than answered wrongly.
 */
export interface BroadcastLog {
  /** The epoch and the last offset delivered on this instance: where a new client starts. */
  head(): { epoch: string; offset: string };
  /** Gives `envelope` its offset and hands it to every instance, this one included (`onDelivery`), in offset order. */
  append(envelope: Envelope): Promise<void>;
  /** Called once for each delivered envelope, in offset order. */
  onDelivery(handler: (envelope: Envelope) => void): void;
  /**
   * What a client that had everything up to `offset` of `epoch` missed, oldest
   * first: the newest that fit in `budget` (entries and bytes). `complete` is
   * false, with a reason, when anything may be missing.
   */
  since(epoch: string, offset: string, budget: ReadBudget): Promise<Replay>;
  /** Entries after `offset`, oldest first, at most `budget` (GET /history pages forward). `complete`: nothing more remains. */
  page(epoch: string, offset: string, budget: ReadBudget): Promise<Replay>;
  start(): Promise<void>;
  close(): void;
}

export interface HistoryLimits {
  /** Entries kept (approximately, with Redis). */
  maxEntries: number;
  /** Entries older than this are trimmed; 0: no time bound. */
  ttlMs: number;
}

/** How much one read may return: entries, and bytes of their payloads. */
export interface ReadBudget {
  entries: number;
  bytes: number;
}

export interface Replay {
  entries: Envelope[];
  complete: boolean;
  /** Why not complete. */
  reason?: RecoveryReason;
}

/**
 * Redis reads come in pages of about this many bytes: one command's time in
 * Redis grows with what it returns, and a page of 256 KiB costs well under a
 * millisecond, so a replay never holds Redis for others.
 */
const PAGE_BYTES = 256 * 1024;
const MAX_PAGE = 512;

const OFFSET = /^(\d{1,16})-(\d{1,16})$/;

/** A client's offset, or undefined: total, never throws. */
export function parseOffset(value: unknown): string | undefined {
  return typeof value === "string" && OFFSET.test(value) ? value : undefined;
}

/** Orders two offsets (`<ms>-<seq>`). */
export function compareOffsets(a: string, b: string): number {
  const [am = 0, as = 0] = a.split("-").map(Number);
  const [bm = 0, bs = 0] = b.split("-").map(Number);
  return am !== bm ? am - bm : as - bs;
}

const newEpoch = (): string => randomBytes(6).toString("base64url");

/** One instance alone: a ring in memory with the same semantics. */
export class MemoryLog implements BroadcastLog {
  readonly #epoch = newEpoch();
  readonly #entries: { offset: string; at: number; bytes: number; envelope: Envelope }[] = [];
  #handler: (envelope: Envelope) => void = () => undefined;
  #last = "0-0";
  /** The newest offset trimmed away: a client behind it may have missed something. */
  #maxDeleted = "0-0";

  constructor(private readonly limits: HistoryLimits) {}

  head() {
    return { epoch: this.#epoch, offset: this.#last };
  }

  async append(envelope: Envelope): Promise<void> {
    const now = Date.now();
    const [ms = 0, seq = 0] = this.#last.split("-").map(Number);
    const offset = now > ms ? `${now}-0` : `${ms}-${seq + 1}`;
    this.#last = offset;
    const stamped = withOffset(envelope, offset);
    // The size a Redis stream would hold, so both histories spend one byte budget alike.
    this.#entries.push({ offset, at: now, bytes: JSON.stringify(envelope).length, envelope: stamped });
    this.#trim(now);
    this.#handler(stamped);
  }

  onDelivery(handler: (envelope: Envelope) => void): void {
    this.#handler = handler;
  }

  async since(epoch: string, offset: string, budget: ReadBudget): Promise<Replay> {
    const refused = this.#check(epoch, offset);
    if (refused) return refused;
    const after = this.#after(offset);
    // From the newest back, while the budget lasts: what is replayed runs into live without a hole.
    let bytes = 0;
    let first = after.length;
    while (first > 0 && after.length - first < budget.entries && bytes + after[first - 1]!.bytes <= budget.bytes) bytes += after[--first]!.bytes;
    const entries = after.slice(first).map((e) => e.envelope);
    if (first > 0) return { entries, complete: false, reason: "TOO_LARGE" };
    if (compareOffsets(offset, this.#maxDeleted) < 0) return { entries, complete: false, reason: "TRIMMED" };
    return { entries, complete: true };
  }

  async page(epoch: string, offset: string, budget: ReadBudget): Promise<Replay> {
    const refused = this.#check(epoch, offset);
    if (refused) return refused;
    const after = this.#after(offset);
    let bytes = 0;
    let n = 0;
    while (n < after.length && n < budget.entries && (n === 0 || bytes + after[n]!.bytes <= budget.bytes)) bytes += after[n++]!.bytes;
    const entries = after.slice(0, n).map((e) => e.envelope);
    if (compareOffsets(offset, this.#maxDeleted) < 0) return { entries, complete: false, reason: "TRIMMED" };
    return n < after.length ? { entries, complete: false, reason: "TOO_LARGE" } : { entries, complete: true };
  }

  async start(): Promise<void> {}
  close(): void {}

  /** Offsets of another history mean nothing here; one it never gave is refused, not waited for. */
  #check(epoch: string, offset: string): Replay | undefined {
    this.#trim(Date.now());
    if (epoch !== this.#epoch) return { entries: [], complete: false, reason: "EPOCH_CHANGED" };
    if (compareOffsets(offset, this.#last) > 0) return { entries: [], complete: false, reason: "FUTURE_OFFSET" };
    return undefined;
  }

  #after(offset: string) {
    const i = this.#entries.findIndex((e) => compareOffsets(e.offset, offset) > 0);
    return i < 0 ? [] : this.#entries.slice(i);
  }

  #trim(now: number): void {
    const { maxEntries, ttlMs } = this.limits;
    let drop = Math.max(0, this.#entries.length - maxEntries);
    if (ttlMs > 0) while (drop < this.#entries.length && now - this.#entries[drop]!.at > ttlMs) drop++;
    if (drop === 0) return;
    this.#maxDeleted = this.#entries[drop - 1]!.offset;
    this.#entries.splice(0, drop);
  }
}

/**
 * The stream, its epoch and floor keys, and its channel. On a Redis Cluster
 * they share one hash tag, so they live on one shard: the append script may
 * touch them all and SPUBLISH there (SPUBLISH checks the channel's slot like a
 * key's). One Redis keeps the names of earlier releases, so a rolling upgrade
 * shares its history and channel with the instances it replaces.
 */
const historyKeys = (kind: RedisConnection["kind"]) => {
  const base = kind === "cluster" ? "wbs:{history}" : "wbs:history";
  // floor: the first entry left after the last trim (a client behind it may have missed what was trimmed).
  return { stream: base, epoch: `${base}:epoch`, floor: `${base}:floor`, channel: `${base}:live` };
};

// Append and publish in one atomic step: Redis runs scripts one at a time, so
// the order of PUBLISH (what every instance delivers) is the order of XADD
// (the offsets). A `gap` entry marks a Redis outage during which an instance
// delivered to its own clients only. When a trim removes entries, the first
// one left is the floor (XINFO's max-deleted-entry-id does not follow trims).
// With ARGV[8] = '1' (a cluster) the message names the entry before it too, so
// an instance whose sharded subscription moved with a failover sees what it
// missed and reads it from the stream.
// KEYS: stream, epoch, floor. ARGV: payload, kind (e|gap), maxlen, minid, a new epoch, channel, PUBLISH or SPUBLISH, chained.
const APPEND = `
local epoch = redis.call('GET', KEYS[2])
if not epoch then epoch = ARGV[5]; redis.call('SET', KEYS[2], epoch) end
local head = epoch .. ' '
if ARGV[8] == '1' then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  head = head .. (last[1] and last[1][1] or '0-0') .. ' '
end
local id = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[1])
local trimmed = redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[3])
if ARGV[4] ~= '0' then trimmed = trimmed + redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4]) end
if trimmed > 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  redis.call('SET', KEYS[3], first[1] and first[1][1] or id)
end
redis.call(ARGV[7], ARGV[6], head .. id .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
return {epoch, id}`;

// The epoch (made if none), the last id, and the newest id trimmed away, in one step.
const HEAD = `
local epoch = redis.call('GET', KEYS[2])
if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[2], epoch) end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {epoch, last[1] and last[1][1] or '0-0'}`;

// The epoch (none: this history is gone), the floor, and the last id the stream
// ever gave (XINFO's last-generated-id: kept when trims empty the stream), read
// in Redis, so no entry crosses the network.
const META = `
local epoch = redis.call('GET', KEYS[2])
if not epoch then return {false} end
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
end
return {epoch, redis.call('GET', KEYS[3]) or '0-0', last}`;

type StreamEntry = [id: string, fields: string[]];

/**
 * How long broadcasts wait for Redis by default before an instance delivers
 * them to its own clients only: on a cluster above the default
 * cluster-node-timeout (15 s) plus an election, so a failover with Redis's
 * defaults loses nothing; on one Redis long enough for a reconnect.
 */
export const DEFAULT_HOLD_MS = { cluster: 20_000, single: 2_000 } as const;

export interface RedisLogOptions extends HistoryLimits {
  /** How long appends are held and retried while Redis is unreachable. */
  holdMs: number;
}

/** Entries per page for the next read, from the average size seen so far. */
const nextPage = (bytes: number, entries: number, left: number): number =>
  Math.max(1, Math.min(MAX_PAGE, left, Math.floor(PAGE_BYTES / Math.max(1, entries > 0 ? bytes / entries : PAGE_BYTES))));

/** With Redis: a stream (XADD with an approximate MAXLEN and a MINID time bound), delivered through one channel. */
export class RedisLog implements BroadcastLog {
  #handler: (envelope: Envelope) => void = () => undefined;
  #epoch = "";
  #last = "0-0";
  /** Set while this instance delivered to its own clients only: a gap entry follows once Redis is back. */
  #gap = false;
  /** Set once a hold ran out: until Redis is back, broadcasts go to local clients at once. */
  #away = false;
  /** Appends waiting, in publishing order, for Redis to come back; the first is being retried. */
  readonly #held: { payload: string; envelope: Envelope; done: () => void }[] = [];
  #closed = false;

  readonly #outage: ReturnType<typeof skippedPublishes>;
  readonly #keys: ReturnType<typeof historyKeys>;
  /** On a cluster each message names the entry before it (see APPEND). */
  readonly #chained: boolean;
  /** Reading missed entries from the stream; live ones wait in #waiting meanwhile. */
  #repairing = false;
  readonly #waiting: ChannelEntry[] = [];

  constructor(
    private readonly redis: RedisConnection,
    private readonly opts: RedisLogOptions,
    private readonly log: Logger,
    onSkipped: () => void = () => undefined,
  ) {
    this.#outage = skippedPublishes(log, onSkipped);
    this.#keys = historyKeys(redis.kind);
    this.#chained = redis.kind === "cluster";
  }

  head() {
    return { epoch: this.#epoch, offset: this.#last };
  }

  onDelivery(handler: (envelope: Envelope) => void): void {
    this.#handler = handler;
  }

  async start(): Promise<void> {
    await this.redis.subscribe(this.#keys.channel, (message: string) => this.#receive(message));
    await this.#readHead(true);
    // Back from an outage: mark the gap in the history for everyone, and learn the (maybe new) epoch.
    this.redis.onReconnect(() => {
      if (this.#closed) return;
      this.#away = false;
      void (async () => {
        if (this.#gap)
          await this.#append("", "gap").then(
            () => (this.#gap = false),
            () => undefined,
          );
        await this.#readHead(false).catch(() => undefined);
      })();
    });
    // One Redis: the subscription is back (node-redis resubscribes before it
    // says ready), and what was published while it was down is in the stream.
    // A cluster's messages name their predecessor, so the next one finds a gap itself.
    if (!this.#chained) {
      this.redis.onSubscriberReady(() => {
        if (!this.#closed && !this.#repairing) void this.#repair();
      });
    }
  }

  close(): void {
    this.#closed = true;
  }

  async append(envelope: Envelope): Promise<void> {
    const payload = JSON.stringify(envelope);
    // Behind appends being retried: wait in line, so the order stays the order of publishing.
    if (this.#held.length > 0) return this.#hold(payload, envelope);
    if (this.#away) return this.#deliverLocally(envelope);
    if (this.redis.commandsReady) {
      try {
        await this.#append(payload, "e");
        this.#outage.published();
        return;
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, "history append failed: holding it while redis comes back");
      }
    }
    return this.#hold(payload, envelope);
  }

  /**
   * Redis is away: this instance's clients get it, without an offset; the gap
   * entry written on Redis's return tells recovering clients.
   */
  #deliverLocally(envelope: Envelope): void {
    this.#gap = true;
    this.#outage.skip();
    this.#handler(envelope);
  }

  /** Queues an append for #retryHeld; a full queue delivers locally instead. */
  #hold(payload: string, envelope: Envelope): Promise<void> {
    if (this.#held.length >= Math.max(1, this.opts.maxEntries)) {
      this.#deliverLocally(envelope);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#held.push({ payload, envelope, done: resolve });
      if (this.#held.length === 1) void this.#retryHeld();
    });
  }

  /**
   * Retries the oldest held append until it lands (Redis reconnected, or the
   * shard's replica took over), then the rest in order; past `holdMs`, or
   * once a cluster client is disconnected altogether, everything held goes to
   * local clients only. A command cut in flight may have run: its retry can
   * add the entry twice (at least once, never lost).
   */
  async #retryHeld(): Promise<void> {
    const started = Date.now();
    this.log.warn({ holdMs: this.opts.holdMs }, "history unreachable: holding broadcasts while redis comes back");
    while (this.#held.length > 0) {
      const head = this.#held[0]!;
      try {
        if (!this.redis.commandsReady) throw new Error("not connected");
        await this.#append(head.payload, "e");
        this.#held.shift();
        head.done();
        if (this.#held.length === 0) this.log.info({ heldMs: Date.now() - started }, "history back: held broadcasts published in order");
        continue;
      } catch {
        // A cluster client with no connection left at all will not come back within a failover.
        const gaveUp = this.redis.kind === "cluster" && !this.redis.commandsReady;
        if (!this.#closed && !gaveUp && Date.now() - started < this.opts.holdMs) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        // Only a hold that ran its time marks an outage; the next append after a cluster's give-up tries again.
        this.#away = !gaveUp;
      }
      for (const held of this.#held.splice(0)) {
        this.#deliverLocally(held.envelope);
        held.done();
      }
    }
  }

  async since(epoch: string, offset: string, budget: ReadBudget): Promise<Replay> {
    const meta = await this.#meta();
    const refused = checkResume(meta, epoch, offset);
    if (refused) return refused;
    // Newest first, back to the offset: what fits the budget is the newest, so the replay runs into live without a hole.
    const { kept, over } = await this.#collect("XREVRANGE", meta.last, `(${offset}`, budget, false);
    return toReplay(kept.reverse(), { over, trimmed: isTrimmed(meta.floor, offset) });
  }

  async page(epoch: string, offset: string, budget: ReadBudget): Promise<Replay> {
    const meta = await this.#meta();
    const refused = checkResume(meta, epoch, offset);
    if (refused) return refused;
    // The first entry is returned whatever its size, so paging always moves on.
    const { kept, over } = await this.#collect("XRANGE", `(${offset}`, meta.last, budget, true);
    return toReplay(kept, { over, trimmed: isTrimmed(meta.floor, offset) });
  }

  /**
   * Reads from `from` towards `to` in pages (the page size follows the
   * entries' average size) until the range ends or the budget is spent;
   * `over` says entries were left.
   */
  async #collect(command: "XRANGE" | "XREVRANGE", from: string, to: string, budget: ReadBudget, firstAlwaysFits: boolean) {
    const kept: StreamEntry[] = [];
    let bytes = 0;
    let over = false;
    let count = Math.min(2, budget.entries + 1);
    for (let a = from; ; ) {
      const page = await this.#read(command, a, to, count);
      for (const entry of page) {
        const size = entry[1][1]?.length ?? 0;
        const fits = kept.length < budget.entries && (bytes + size <= budget.bytes || (firstAlwaysFits && kept.length === 0));
        if (!fits) {
          over = true;
          break;
        }
        kept.push(entry);
        bytes += size;
      }
      if (over || page.length < count) return { kept, over };
      a = `(${page[page.length - 1]![0]}`;
      count = nextPage(bytes, kept.length, budget.entries - kept.length + 1);
    }
  }

  async #meta(): Promise<StreamMeta> {
    const { stream, epoch, floor } = this.#keys;
    const [current, floorId, last] = (await this.redis.command(stream, ["EVAL", META, "3", stream, epoch, floor])) as [string | null, string, string];
    return { epoch: current ?? undefined, floor: floorId, last };
  }

  /** One page of the stream (XRANGE from `a` to `b`, XREVRANGE from `a` down to `b`). */
  #read(command: "XRANGE" | "XREVRANGE", a: string, b: string, count: number): Promise<StreamEntry[]> {
    const { stream } = this.#keys;
    return this.redis.command(stream, [command, stream, a, b, "COUNT", String(count)]) as Promise<StreamEntry[]>;
  }

  async #append(payload: string, kind: "e" | "gap"): Promise<void> {
    const minId = this.opts.ttlMs > 0 ? String(Date.now() - this.opts.ttlMs) : "0";
    const { stream, epoch, floor, channel } = this.#keys;
    const chained = this.#chained ? "1" : "0";
    const args = [payload, kind, String(this.opts.maxEntries), minId, newEpoch(), channel, this.redis.publishCommand, chained];
    await this.redis.command(stream, ["EVAL", APPEND, "3", stream, epoch, floor, ...args]);
  }

  /**
   * The epoch and the newest offset. At start this instance stands there; in
   * a new epoch, at its beginning. Otherwise it stays where delivery brought
   * it: what it missed comes from the stream (#repair).
   */
  async #readHead(initial: boolean): Promise<void> {
    const [epoch, last] = (await this.redis.command(this.#keys.stream, ["EVAL", HEAD, "2", this.#keys.stream, this.#keys.epoch, newEpoch()])) as [
      string,
      string,
    ];
    // A new history (Redis lost its data) holds only what came after it began: all of it is new
    // here, and what of it is on its way on the channel must not be skipped as read.
    if (initial) this.#last = last;
    else if (epoch !== this.#epoch) this.#last = "0-0";
    this.#epoch = epoch;
  }

  /** `<epoch> [<prev>] <id> <kind> <payload>` from the channel, in offset order. */
  #receive(message: string): void {
    const fields = message.split(" ", this.#chained ? 4 : 3);
    const [epoch = "", prev, id = "", kind = ""] = this.#chained ? fields : [fields[0], undefined, fields[1], fields[2]];
    const entry: ChannelEntry = { epoch, id, kind, payload: message.slice(fields.reduce((n, f) => n + f.length + 1, 0)) };
    if (this.#repairing) {
      this.#waiting.push(entry);
      return;
    }
    if (prev !== undefined && epoch === this.#epoch && compareOffsets(prev, this.#last) > 0) {
      // Entries between ours and this one never reached us (the subscription moved with a failover).
      this.#waiting.push(entry);
      void this.#repair();
      return;
    }
    this.#apply(entry);
  }

  /** Delivers an entry once: one at or before where this instance stands came already (repairs overlap the live channel). */
  #apply(entry: ChannelEntry): void {
    if (entry.epoch === this.#epoch && compareOffsets(entry.id, this.#last) <= 0) return;
    this.#epoch = entry.epoch;
    this.#last = entry.id;
    if (entry.kind !== "e") return;
    const envelope = parseEnvelope(entry.payload);
    if (envelope) this.#handler(withOffset(envelope, entry.id));
  }

  /** Reads what this instance missed from the stream, in pages, and delivers it; then what came live meanwhile, in order. */
  async #repair(): Promise<void> {
    this.#repairing = true;
    const from = this.#last;
    const started = Date.now();
    let missed = 0;
    // A read can fail while the shard still fails over: try again from where
    // delivery stands, live entries waiting meanwhile, for as long as appends are held.
    for (;;) {
      try {
        missed += await this.#readMissed();
        if (missed > 0) this.log.warn({ from, missed }, "broadcasts missed on the channel: delivered from the history");
        break;
      } catch (err) {
        if (this.#closed || Date.now() - started >= this.opts.holdMs) {
          this.log.warn({ from, err: (err as Error).message }, "broadcasts missed on the channel could not be read from the history");
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    this.#repairing = false;
    for (const entry of this.#waiting.splice(0)) this.#apply(entry);
  }

  /** Delivers the stream's entries after where this instance stands, in pages; answers how many had not come live. */
  async #readMissed(): Promise<number> {
    let missed = 0;
    let lower = `(${this.#last}`;
    let count = 2;
    let bytes = 0;
    let read = 0;
    for (;;) {
      const page = await this.#read("XRANGE", lower, "+", count);
      for (const [id, [kind = "", payload = ""]] of page) {
        if (!this.#waiting.some((w) => w.id === id) && compareOffsets(id, this.#last) > 0) missed++;
        this.#apply({ epoch: this.#epoch, id, kind, payload });
        bytes += payload.length;
      }
      read += page.length;
      if (page.length < count) return missed;
      lower = `(${page[page.length - 1]![0]}`;
      count = nextPage(bytes, read, MAX_PAGE);
    }
  }
}

interface StreamMeta {
  /** Undefined: the history is gone (Redis lost its data). */
  epoch: string | undefined;
  floor: string;
  last: string;
}

/** A resume that cannot be answered from this history: another epoch, or an offset it never gave. */
function checkResume(meta: StreamMeta, epoch: string, offset: string): Replay | undefined {
  if (meta.epoch === undefined || meta.epoch !== epoch) return { entries: [], complete: false, reason: "EPOCH_CHANGED" };
  if (compareOffsets(offset, meta.last) > 0) return { entries: [], complete: false, reason: "FUTURE_OFFSET" };
  return undefined;
}

/** Entries before the floor were trimmed: only a client at or past it has them all. */
const isTrimmed = (floor: string, offset: string): boolean => floor !== "0-0" && compareOffsets(offset, floor) < 0;

function toReplay(kept: StreamEntry[], state: { over: boolean; trimmed: boolean }): Replay {
  const entries: Envelope[] = [];
  let gap = false;
  for (const [id, fields] of kept) {
    if (fields[0] !== "e") {
      gap = true; // some instance served its own clients only
      continue;
    }
    const envelope = parseEnvelope(fields[1]);
    if (envelope) entries.push(withOffset(envelope, id));
  }
  const reason: RecoveryReason | undefined = state.over ? "TOO_LARGE" : state.trimmed ? "TRIMMED" : gap ? "GAP" : undefined;
  return reason ? { entries, complete: false, reason } : { entries, complete: true };
}

interface ChannelEntry {
  epoch: string;
  id: string;
  kind: string;
  payload: string;
}

function parseEnvelope(payload: string | undefined): Envelope | undefined {
  try {
    return JSON.parse(payload ?? "") as Envelope;
  } catch {
    return undefined;
  }
}

/** The envelope with its offset on the payload (what clients see), the input untouched. */
function withOffset(envelope: Envelope, offset: string): Envelope {
  return { ...envelope, event: { ...envelope.event, data: { ...envelope.event.data, offset } } as Envelope["event"] };
}

/**
 * The history an instance keeps, started: none with HISTORY_SIZE=0 (no
 * offsets), a Redis stream with Redis, a ring in memory alone.
 */
export async function createHistory(
  config: { historySize: number; historyTtlMs: number; redisHoldMs: number | undefined },
  redis: RedisConnection | undefined,
  log: Logger,
  onSkipped: () => void,
): Promise<BroadcastLog | undefined> {
  if (config.historySize === 0) return undefined;
  const limits = { maxEntries: config.historySize, ttlMs: config.historyTtlMs };
  const history = redis ? new RedisLog(redis, { ...limits, holdMs: config.redisHoldMs ?? DEFAULT_HOLD_MS[redis.kind] }, log, onSkipped) : new MemoryLog(limits);
  await history.start();
  return history;
}
