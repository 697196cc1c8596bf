import { ServiceError } from "../errors.js";
import { refill } from "./rate-limit.js";

/** Addresses tracked at most; past it the least recently seen is forgotten (a map an attacker cannot grow without bound). */
const MAX_ADDRESSES = 100_000;
/** The burst of an address or of the instance: this many seconds of its rate. */
const BURST_SEC = 2;

export interface PublishRate {
  /** Messages a second; 0: no limit. */
  perSec: number;
  /** Bytes of text a second; 0: no limit. */
  bytesPerSec: number;
}

interface Buckets {
  messages: { tokens: number; at: number };
  bytes: { tokens: number; at: number };
  /** Refusals in a row (an admitted message resets it). */
  refused: number;
}

/**
 * A publish refused by these limits. `disconnect` is set once its address
 * has been refused `disconnectAfter` times in a row: it keeps sending while
 * refused (one connection or fifty), so its connection is cut and its
 * address boxed, as the connection's own limit does.
 */
export class PublishRefused extends ServiceError {
  constructor(
    why: string,
    readonly scope: LimitScope,
    readonly disconnect: boolean,
  ) {
    super("RATE_LIMITED", why);
  }
}

/** Where a refused publish was refused: the label of wbs_rate_limited_total's `scope`. */
export type LimitScope = "address" | "instance";

/**
 * What clients may publish beyond their own connection's bucket: per
 * address (every connection from one office, one attacker's fifty sockets)
 * and per instance (everyone here), in messages and in bytes a second, since
 * every message is sent to every reader. An address's rate is cluster-wide:
 * each of N live instances allows a 1/N share (nginx spreads one address's
 * sessions over them). Buckets hold BURST_SEC of their rate and credit a
 * recent stall of the loop, as the connection's bucket does.
 */
export class PublishLimits {
  readonly #addresses = new Map<string, Buckets>();
  #instance: Buckets | undefined;

  constructor(
    private readonly opts: {
      address: PublishRate;
      instance: PublishRate;
      /** Live instances sharing the address's rate. */
      instances: () => number;
      stallMs: () => number;
      /** Counts a refusal. */
      refused: (transport: string, scope: LimitScope) => void;
      /** An address refused this many times in a row is cut off (PublishRefused.disconnect); 0: never. */
      disconnectAfter: number;
    },
  ) {}

  /** Refuses (throws PublishRefused, counted) a client's message of `text` over its address's or the instance's limits. */
  admit(transport: string, address: string, text: unknown): void {
    if (typeof text !== "string") return; // refused as BAD_REQUEST by the domain
    const refused = this.take(address, Buffer.byteLength(text));
    if (!refused) return;
    this.opts.refused(transport, refused.scope);
    throw refused;
  }

  /** Takes one message of `bytes` for `address`, or answers why not (nothing taken then). */
  take(address: string, bytes: number): PublishRefused | undefined {
    const { address: perAddress, instance } = this.opts;
    const stall = this.opts.stallMs();
    const share = 1 / Math.max(1, this.opts.instances());
    const mine = this.#instance ?? (this.#instance = fresh(instance, 1));
    // The instance's own limit is nobody's fault: refused, never cut.
    if (!fits(mine, instance, 1, bytes, stall)) return new PublishRefused("this instance takes no more messages now; try again shortly", "instance", false);
    // This machine itself is exempt, as in nginx.conf: local tools, load tests, and nginx when TRUST_PROXY is unset.
    if ((perAddress.perSec <= 0 && perAddress.bytesPerSec <= 0) || address === "127.0.0.1" || address === "::1" || address === "::ffff:127.0.0.1") {
      return void spend(mine, bytes);
    }
    let buckets = this.#addresses.get(address);
    if (buckets) {
      this.#addresses.delete(address); // re-inserted last: the Map stays in least-recently-seen order
    } else {
      buckets = fresh(perAddress, share);
      if (this.#addresses.size >= MAX_ADDRESSES) this.#addresses.delete(this.#addresses.keys().next().value as string);
    }
    this.#addresses.set(address, buckets);
    if (!fits(buckets, perAddress, share, bytes, stall)) {
      buckets.refused++;
      const cut = this.opts.disconnectAfter > 0 && buckets.refused >= this.opts.disconnectAfter;
      return new PublishRefused(`at most ${describe(perAddress)} from one address`, "address", cut);
    }
    buckets.refused = 0;
    spend(mine, bytes);
    spend(buckets, bytes);
    return undefined;
  }
}

const describe = (r: PublishRate) =>
  [r.perSec > 0 ? `${r.perSec} messages` : undefined, r.bytesPerSec > 0 ? `${Math.round(r.bytesPerSec / 1024)} KiB` : undefined].filter(Boolean).join(" and ") +
  " a second";

function fresh(rate: PublishRate, share: number): Buckets {
  const at = performance.now();
  return { messages: { tokens: rate.perSec * share * BURST_SEC, at }, bytes: { tokens: rate.bytesPerSec * share * BURST_SEC, at }, refused: 0 };
}

/** Whether one message of `bytes` fits both buckets (a message larger than the whole byte burst fits a full bucket). */
function fits(b: Buckets, rate: PublishRate, share: number, bytes: number, stallMs: number): boolean {
  if (rate.perSec > 0) {
    const perMs = (rate.perSec * share) / 1000;
    refill(b.messages, perMs, perMs * 1000 * BURST_SEC, stallMs);
    if (b.messages.tokens < 1) return false;
  }
  if (rate.bytesPerSec > 0) {
    const perMs = (rate.bytesPerSec * share) / 1000;
    const burst = perMs * 1000 * BURST_SEC;
    refill(b.bytes, perMs, burst, stallMs);
    if (b.bytes.tokens < Math.min(bytes, burst)) return false;
  }
  return true;
}

function spend(b: Buckets, bytes: number): void {
  b.messages.tokens -= 1;
  b.bytes.tokens -= bytes;
}
