/** How often the loop is sampled. */
const TICK_MS = 20;
/** A tick this much late is a stall (GC pauses and busy turns below it are normal). */
const STALL_MS = 50;
/** How long after a stall its frames may still be arriving together. */
const REMEMBER_MS = 2_000;

/**
 * Measures how long the event loop was stalled lately (a long turn, a GC
 * pause, the process stopped): frames a client sent at a steady pace during
 * a stall are read together afterwards, and rate limits credit it, so a
 * client is not punished for the server's own lag.
 */
export class LoopStalls {
  #tick = performance.now();
  #stallMs = 0;
  #stallAt = Number.NEGATIVE_INFINITY;
  readonly #timer: NodeJS.Timeout;

  constructor() {
    this.#timer = setInterval(() => {
      const now = performance.now();
      const late = now - this.#tick - TICK_MS;
      this.#tick = now;
      if (late > STALL_MS) this.#remember(late, now);
    }, TICK_MS);
    this.#timer.unref();
  }

  /** The longest recent stall, milliseconds; one still going on (I/O is handled before overdue timers) counts too. */
  recentMs(): number {
    const now = performance.now();
    const current = now - this.#tick - TICK_MS;
    if (current > STALL_MS) this.#remember(current, now);
    return now - this.#stallAt < REMEMBER_MS ? this.#stallMs : 0;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #remember(ms: number, now: number): void {
    if (now - this.#stallAt >= REMEMBER_MS || ms > this.#stallMs) this.#stallMs = ms;
    this.#stallAt = now;
  }
}
