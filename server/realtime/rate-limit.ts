/**
 * Per-connection inbound rate limit: a token bucket (rate `perSec`, size
 * `burst`) refilled lazily on each message, so it costs three numbers a
 * connection and no timer. A connection that keeps sending while refused is
 * told to go after `disconnectAfter` refusals in a row.
 *
 * Hand-written rather than rate-limiter-flexible: that library keys every
 * limiter by a string in a shared store with its own expiry timers, which
 * costs memory and a lookup per message at tens of thousands of connections;
 * the bucket below lives on the connection and dies with it.
 */
export interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
  /** Refusals since the last accepted message. */
  refused: number;
}

export type Verdict = "ok" | "refused" | "disconnect";

export interface RateLimiter {
  /** A full bucket for a new connection; undefined when the limit is off. */
  bucket(): Bucket | undefined;
  take(bucket: Bucket | undefined): Verdict;
  /** For refusals: "20 messages a second (burst 40)". */
  readonly description: string;
}

/**
 * Refills `b` at `perMs` up to `burst`, plus what the rate gave during a
 * recent stall of the server (`stallMs`): frames sent at a steady pace
 * while the loop was stalled arrive together and must not empty the bucket.
 */
export function refill(b: { tokens: number; at: number }, perMs: number, burst: number, stallMs: number): void {
  const t = performance.now();
  b.tokens = Math.min(burst + stallMs * perMs, b.tokens + (t - b.at) * perMs);
  b.at = t;
}

export function createRateLimiter(opts: { perSec: number; burst: number; disconnectAfter: number; stallMs?: () => number }): RateLimiter {
  const { perSec, burst, disconnectAfter } = opts;
  const stallMs = opts.stallMs ?? (() => 0);
  const description = `${perSec} messages a second (burst ${burst})`;
  if (perSec <= 0) return { bucket: () => undefined, take: () => "ok", description };
  const perMs = perSec / 1000;
  return {
    description,
    bucket: () => ({ tokens: burst, at: performance.now(), refused: 0 }),
    take(b) {
      if (!b) return "ok";
      refill(b, perMs, burst, stallMs());
      if (b.tokens >= 1) {
        b.tokens -= 1;
        b.refused = 0;
        return "ok";
      }
      b.refused++;
      return disconnectAfter > 0 && b.refused >= disconnectAfter ? "disconnect" : "refused";
    },
  };
}
