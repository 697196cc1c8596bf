import type { Logger } from "./logger.js";

interface Closer {
  name: string;
  close: () => unknown;
  /** The most it may take; past it the next one runs (a close that waits on Redis, which may be away). */
  timeoutMs: number | undefined;
}

/**
 * What the parts of an instance give back when it closes, each registered by
 * the part itself as it is built, and run in reverse order of registration
 * (fastify's onClose, run in reverse by avvio): the last part built, which
 * depends on the others, closes first. A close that fails or overruns is
 * logged, and the next one runs.
 */
export class Closers {
  readonly #closers: Closer[] = [];

  constructor(private readonly log: Logger) {}

  add(name: string, close: () => unknown, opts: { timeoutMs?: number } = {}): void {
    this.#closers.push({ name, close, timeoutMs: opts.timeoutMs });
  }

  async closeAll(): Promise<void> {
    for (const { name, close, timeoutMs } of this.#closers.splice(0).reverse()) {
      let timer: NodeJS.Timeout | undefined;
      try {
        const done = Promise.resolve().then(close);
        await (timeoutMs === undefined ? done : Promise.race([done, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs, "timeout")).unref())]));
      } catch (err) {
        this.log.warn({ err, part: name }, "close failed; going on");
      } finally {
        clearTimeout(timer);
      }
    }
  }
}
