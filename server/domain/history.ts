import { randomBytes } from "node:crypto";
import { skippedPublishes } from "../cluster/outage.js";
import type { RedisConnection } from "../cluster/redis.js";
import type { Logger } from "../logger.js";
import type { Envelope } from "../protocol.js";

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
   * first, at most `limit`. `complete` is false when anything may be missing:
   * another epoch, entries trimmed away, a Redis outage in between, or more
   * than `limit`.
   */
  since(epoch: string, offset: string, limit: number): Promise<{ entries: Envelope[]; complete: boolean }>;
  start(): Promise<void>;
  close(): void;
}

export interface HistoryLimits {
  /** Entries kept (approximately, with Redis). */
  maxEntries: number;
  /** Entries older than this are trimmed; 0: no time bound. */
  ttlMs: number;
}

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
  readonly #entries: { offset: string; at: number; envelope: Envelope }[] = [];
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
    this.#entries.push({ offset, at: now, envelope: stamped });
    this.#trim(now);
    this.#handler(stamped);
  }

  onDelivery(handler: (envelope: Envelope) => void): void {
    this.#handler = handler;
  }

  async since(epoch: string, offset: string, limit: number) {
    this.#trim(Date.now());
    // Offsets of another history mean nothing here.
    if (epoch !== this.#epoch) return { entries: [], complete: false };
    const after = this.#entries.filter((e) => compareOffsets(e.offset, offset) > 0);
    const complete = compareOffsets(offset, this.#maxDeleted) >= 0 && after.length <= limit;
    // Past the limit, the newest: what is replayed runs into live without a hole.
    return { entries: after.slice(-limit).map((e) => e.envelope), complete };
  }

  async start(): Promise<void> {}
  close(): void {}

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

// What came after ARGV[1]: the epoch, the floor, and up to ARGV[2] entries, newest first.
const SINCE = `
local epoch = redis.call('GET', KEYS[2])
if not epoch then return {false} end
return {epoch, redis.call('GET', KEYS[3]) or '0-0', redis.call('XREVRANGE', KEYS[1], '+', '(' .. ARGV[1], 'COUNT', ARGV[2])}`;

type StreamEntry = [id: string, fields: string[]];

/**
 * How long broadcasts are held while the history's shard fails over (Redis
 * Cluster only): above the default cluster-node-timeout (15 s) plus an
 * election, so a failover with Redis's defaults loses nothing.
 */
const FAILOVER_WINDOW_MS = 20_000;

/** With Redis: a stream (XADD with an approximate MAXLEN and a MINID time bound), delivered through one channel. */
export class RedisLog implements BroadcastLog {
  #handler: (envelope: Envelope) => void = () => undefined;
  #epoch = "";
  #last = "0-0";
  /** Set while this instance delivered to its own clients only: a gap entry follows once Redis is back. */
  #gap = false;
  /** Appends waiting, in publishing order, for a cluster shard to fail over; the first is being retried. */
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
    private readonly limits: HistoryLimits,
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
      void (async () => {
        if (this.#gap)
          await this.#append("", "gap").then(
            () => (this.#gap = false),
            () => undefined,
          );
        await this.#readHead(false).catch(() => undefined);
      })();
    });
  }

  close(): void {
    this.#closed = true;
  }

  async append(envelope: Envelope): Promise<void> {
    const payload = JSON.stringify(envelope);
    // Behind appends being retried: wait in line, so the order stays the order of publishing.
    if (this.#held.length > 0) return this.#hold(payload, envelope);
    if (this.redis.ready) {
      try {
        await this.#append(payload, "e");
        this.#outage.published();
        return;
      } catch (err) {
        // A cluster still connected has lost one shard: its replica takes over in seconds.
        if (this.redis.kind === "cluster" && this.redis.ready) return this.#hold(payload, envelope);
        this.log.debug({ err: (err as Error).message }, "history append failed: delivered to this instance's clients only");
      }
    }
    this.#deliverLocally(envelope);
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
    if (this.#held.length >= Math.max(1, this.limits.maxEntries)) {
      this.#deliverLocally(envelope);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#held.push({ payload, envelope, done: resolve });
      if (this.#held.length === 1) void this.#retryHeld();
    });
  }

  /**
   * Retries the oldest held append until it lands (the shard's replica took
   * over), then the rest in order; past FAILOVER_WINDOW_MS, or once the client
   * is disconnected altogether, everything held goes to local clients only.
   */
  async #retryHeld(): Promise<void> {
    const started = Date.now();
    this.log.warn({ windowMs: FAILOVER_WINDOW_MS }, "history shard unreachable: holding broadcasts while the cluster fails over");
    while (this.#held.length > 0) {
      const head = this.#held[0]!;
      try {
        await this.#append(head.payload, "e");
        this.#held.shift();
        head.done();
        if (this.#held.length === 0) this.log.info({ heldMs: Date.now() - started }, "history shard back: held broadcasts published in order");
        continue;
      } catch {
        if (!this.#closed && this.redis.ready && Date.now() - started < FAILOVER_WINDOW_MS) {
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
      }
      for (const held of this.#held.splice(0)) {
        this.#deliverLocally(held.envelope);
        held.done();
      }
    }
  }

  async since(epoch: string, offset: string, limit: number) {
    const [current, floor, entries] = (await this.redis.command(this.#keys.stream, [
      "EVAL",
      SINCE,
      "3",
      this.#keys.stream,
      this.#keys.epoch,
      this.#keys.floor,
      offset,
      String(limit + 1),
    ])) as [string | null, string, StreamEntry[]];
    // Offsets of another history (or of one Redis lost) mean nothing here.
    if (!current || current !== epoch) return { entries: [], complete: false };
    // Entries before the floor were trimmed: only a client at or past it has them all.
    let complete = (floor === "0-0" || compareOffsets(offset, floor) >= 0) && entries.length <= limit;
    const out: Envelope[] = [];
    // Newest first from XREVRANGE: past the limit, the newest are kept, so the replay runs into live without a hole.
    for (const [id, fields] of entries.slice(0, limit).reverse()) {
      if (fields[0] !== "e") {
        complete = false; // a gap: some instance served its own clients only
        continue;
      }
      const envelope = parseEnvelope(fields[1]);
      if (envelope) out.push(withOffset(envelope, id));
    }
    return { entries: out, complete };
  }

  async #append(payload: string, kind: "e" | "gap"): Promise<void> {
    const minId = this.limits.ttlMs > 0 ? String(Date.now() - this.limits.ttlMs) : "0";
    const { stream, epoch, floor, channel } = this.#keys;
    const chained = this.#chained ? "1" : "0";
    const args = [payload, kind, String(this.limits.maxEntries), minId, newEpoch(), channel, this.redis.publishCommand, chained];
    await this.redis.command(stream, ["EVAL", APPEND, "3", stream, epoch, floor, ...args]);
  }

  /**
   * The epoch and the newest offset. At start, or when the epoch changed, this
   * instance stands there. Otherwise one Redis moves it forward; a cluster
   * leaves it, so the next message finds and repairs what this instance missed.
   */
  async #readHead(initial: boolean): Promise<void> {
    const [epoch, last] = (await this.redis.command(this.#keys.stream, ["EVAL", HEAD, "2", this.#keys.stream, this.#keys.epoch, newEpoch()])) as [
      string,
      string,
    ];
    if (initial || epoch !== this.#epoch || (!this.#chained && compareOffsets(last, this.#last) > 0)) this.#last = last;
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

  /**
   * Delivers an entry. On a cluster, once: one at or before where this
   * instance stands came already (repairs overlap the live channel). One
   * Redis delivers what the channel brings: its #last may have been moved
   * past an entry still on its way by #readHead.
   */
  #apply(entry: ChannelEntry): void {
    if (this.#chained && entry.epoch === this.#epoch && compareOffsets(entry.id, this.#last) <= 0) return;
    this.#epoch = entry.epoch;
    this.#last = entry.id;
    if (entry.kind !== "e") return;
    const envelope = parseEnvelope(entry.payload);
    if (envelope) this.#handler(withOffset(envelope, entry.id));
  }

  /** Reads what this instance missed from the stream and delivers it, then what came live meanwhile, in order. */
  async #repair(): Promise<void> {
    this.#repairing = true;
    const from = this.#last;
    try {
      const { stream } = this.#keys;
      const entries = (await this.redis.command(stream, [
        "XRANGE",
        stream,
        `(${from}`,
        "+",
        "COUNT",
        String(Math.max(1, this.limits.maxEntries)),
      ])) as StreamEntry[];
      const missed = entries.filter(([id]) => !this.#waiting.some((w) => w.id === id)).length;
      this.log.warn({ from, missed }, "broadcasts missed on the channel (a failover moved it): delivered from the history");
      for (const [id, [kind = "", payload = ""]] of entries) this.#apply({ epoch: this.#epoch, id, kind, payload });
    } catch (err) {
      this.log.warn({ from, err: (err as Error).message }, "broadcasts missed on the channel could not be read from the history");
    }
    this.#repairing = false;
    for (const entry of this.#waiting.splice(0)) this.#apply(entry);
  }
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
