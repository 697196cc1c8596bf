import type { DrainState } from "./drain.js";
import type { Logger } from "./logger.js";

export interface ShutdownSteps {
  /** Clients of this instance, every transport. */
  clientCount(): number;
  /** Calls `listener` whenever the count may have changed. */
  onClientsChange(listener: () => void): void;
  /** Tells this instance's clients, once, that it drains. */
  notifyDraining(): void;
  /** At the deadline: /ws with 1001, Socket.IO by closing transports (so clients reconnect elsewhere). */
  closeLeftovers(): void;
  /** Stops everything else: timers, servers, Redis. Must not throw. */
  close(): Promise<void>;
}

/**
 * The drain coordinator. First signal: drain (refuse new clients, keep the
 * ones we have, log progress) until the last client leaves or the deadline
 * passes. Second signal: the deadline, now. Later ones: nothing.
 * `done` resolves once everything is closed; the entry point then exits.
 */
export class ShutdownCoordinator {
  readonly done: Promise<void>;
  #resolve!: () => void;
  #progress: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  #forced = false;

  constructor(
    private readonly opts: {
      drain: DrainState;
      log: Logger;
      forcedShutdownAfterMs: number;
      progressLogEveryMs: number;
      /** How long closed leftovers get to finish their close handshakes. */
      leftoverGraceMs?: number;
      steps: ShutdownSteps;
    },
  ) {
    this.done = new Promise((resolve) => (this.#resolve = resolve));
    opts.steps.onClientsChange(() => this.#checkEmpty());
  }

  /** What SIGTERM/SIGINT do. */
  signal(name: string): void {
    const { drain, log } = this.opts;
    if (drain.phase === "closed" || this.#closing) {
      log.debug({ signal: name }, "signal ignored: already closing");
      return;
    }
    if (drain.draining) {
      log.warn({ signal: name }, "second signal: closing the remaining clients now");
      this.#force("second signal");
      return;
    }
    this.begin(name);
  }

  /** Starts the drain. Idempotent. */
  begin(reason: string): void {
    const { drain, log, steps, forcedShutdownAfterMs, progressLogEveryMs } = this.opts;
    if (!drain.begin()) return;
    log.info(
      { reason, clients: steps.clientCount(), forcedAfterSec: forcedShutdownAfterMs / 1000 },
      "draining: refusing new clients, serving the connected ones until they leave",
    );
    steps.notifyDraining();
    this.#progress = setInterval(() => {
      const left = Math.max(0, forcedShutdownAfterMs - (Date.now() - (drain.since ?? Date.now())));
      log.info(
        { clients: steps.clientCount(), timeLeftSec: Math.round(left / 100) / 10 },
        `drain progress: ${steps.clientCount()} client(s) connected, forced close in ${Math.ceil(left / 1000)}s`,
      );
    }, progressLogEveryMs);
    this.#progress.unref();
    this.#deadline = setTimeout(() => this.#force("deadline"), forcedShutdownAfterMs);
    this.#deadline.unref();
    this.#checkEmpty();
  }

  #checkEmpty(): void {
    if (!this.opts.drain.draining || this.#closing || this.#forced) return;
    if (this.opts.steps.clientCount() === 0) {
      this.opts.log.info("drain complete: no clients left");
      void this.#close();
    }
  }

  #force(reason: string): void {
    if (this.#forced || this.#closing) return;
    this.#forced = true;
    const { log, steps } = this.opts;
    const left = steps.clientCount();
    log.warn({ reason, clients: left }, `forcing shutdown with ${left} client(s) connected`);
    steps.closeLeftovers();
    if (steps.clientCount() === 0) return void this.#close();
    // Give close handshakes a moment, then close whatever is left.
    const grace = setTimeout(() => void this.#close(), this.opts.leftoverGraceMs ?? 1_000);
    grace.unref();
    steps.onClientsChange(() => {
      if (steps.clientCount() === 0) {
        clearTimeout(grace);
        void this.#close();
      }
    });
  }

  #close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#progress);
      clearTimeout(this.#deadline);
      this.opts.drain.close();
      try {
        await this.opts.steps.close();
      } catch (err) {
        this.opts.log.error({ err }, "error while closing");
      }
      this.opts.log.info("closed");
      this.#resolve();
    })();
    return this.#closing;
  }

  /** Closes at once without a drain (tests, start-up failures). */
  closeNow(): Promise<void> {
    this.opts.drain.begin();
    return this.#close();
  }
}

/**
 * Runs `act` on every item, spread evenly over `windowMs` (all at once when
 * it is 0), in a random order so no client is always last.
 */
export function spreadOut<T>(items: T[], windowMs: number, act: (item: T) => void): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  if (windowMs <= 0 || items.length <= 1) return items.forEach(act);
  const step = windowMs / items.length;
  items.forEach((item, i) => setTimeout(() => act(item), i * step).unref());
}
