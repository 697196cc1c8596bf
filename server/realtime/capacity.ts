import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";

/**
 * The one gate for new sessions, Engine.IO and /ws alike: refused while
 * draining or once MAX_CONNECTIONS are open, before anything is taken (a 503
 * sends nginx to another instance). Each transport registers how many it holds.
 */
export class CapacityGate {
  readonly #counts: (() => number)[] = [];

  constructor(
    private readonly maxConnections: number,
    private readonly drain: DrainState,
  ) {}

  /** A transport's open sessions (Engine.IO's, polling handshakes included; /ws's). */
  count(sessions: () => number): void {
    this.#counts.push(sessions);
  }

  /** Why a new session is turned away, if it is. */
  refuse = (): ServiceError | undefined => {
    if (this.drain.draining) return new ServiceError("DRAINING");
    if (this.maxConnections > 0 && this.#counts.reduce((n, c) => n + c(), 0) >= this.maxConnections) {
      return new ServiceError("OVER_CAPACITY", String(this.maxConnections));
    }
    return undefined;
  };
}
