import os from "node:os";

/**
 * The live progress line on stderr: the phase, then a status (connections,
 * frames a second, …) refreshed four times a second on a TTY. Not on a TTY
 * (CI, a pipe), plain lines: each new phase, and the status every few seconds.
 */
export class Progress {
  readonly #tty = Boolean(process.stderr.isTTY);
  #phase = "";
  #status: () => string = () => "";
  #timer: NodeJS.Timeout | undefined;
  #lastPlain = 0;
  #t0 = performance.now();
  #drawn = false;

  start(): void {
    this.#t0 = performance.now();
    this.#timer = setInterval(() => this.#draw(false), this.#tty ? 250 : 1_000);
    this.#timer.unref();
  }

  /** A new phase; `status` is polled for the moving part. */
  phase(text: string, status?: () => string): void {
    this.#phase = text;
    this.#status = status ?? (() => "");
    this.#draw(true);
  }

  /** A line that stays (a finding, a warning). */
  log(line: string): void {
    this.#clear();
    process.stderr.write(`${line}\n`);
    this.#draw(true);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#clear();
  }

  #line(): string {
    const s = this.#status();
    const elapsed = Math.round((performance.now() - this.#t0) / 1000);
    return `[${elapsed}s] ${this.#phase}${s ? ` | ${s}` : ""} | load ${os.loadavg()[0]!.toFixed(1)}`;
  }

  #clear(): void {
    if (this.#tty && this.#drawn) process.stderr.write("\r\x1b[K");
    this.#drawn = false;
  }

  #draw(changed: boolean): void {
    if (!this.#phase) return;
    if (this.#tty) {
      const cols = process.stderr.columns || 120;
      process.stderr.write(`\r\x1b[K${this.#line().slice(0, cols - 1)}`);
      this.#drawn = true;
      return;
    }
    const now = performance.now();
    if (changed || now - this.#lastPlain >= 5_000) {
      this.#lastPlain = now;
      process.stderr.write(`${this.#line()}\n`);
    }
  }
}

/** Frames a second from a growing counter, for the status part. */
export function rateMeter(read: () => number): () => number {
  let last = read();
  let t = performance.now();
  let rate = 0;
  return () => {
    const now = performance.now();
    if (now - t >= 400) {
      const v = read();
      rate = ((v - last) / (now - t)) * 1000;
      last = v;
      t = now;
    }
    return rate;
  };
}
