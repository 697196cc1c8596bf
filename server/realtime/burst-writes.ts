import type { Duplex } from "node:stream";

/**
 * One write a connection per burst instead of one a broadcast. The first
 * delivery in an event-loop turn goes out at once, as it always did, so a
 * lone broadcast costs one setImmediate and nothing a connection. From the
 * second delivery in the same turn on (a burst: the history's channel hands
 * over every message one read brought), every upgraded connection (Socket.IO's
 * WebSockets and /ws) is corked until the turn ends; what the burst queued
 * for it then leaves in one writev. Corking keeps the bytes and their order:
 * it only saves system calls. ws corks around each frame itself; corks nest,
 * so ours holds until the uncork at the end of the turn.
 */
export class BurstWrites {
  readonly #sockets = new Set<Duplex>();
  #deliveries = 0;
  #corked: Duplex[] | undefined;
  // Closed sockets leave the set at the next sweep, not through a "close"
  // listener each: a listener a connection (closure, once-wrapper, listener
  // array) costs about 250 bytes on every idle connection.
  readonly #sweeper: NodeJS.Timeout;

  constructor(
    private readonly onBurst: () => void = () => undefined,
    sweepEveryMs = 1_000,
  ) {
    this.#sweeper = setInterval(this.#sweep, sweepEveryMs);
    this.#sweeper.unref();
  }

  /** An upgrading connection: corked in bursts from now until it closes. */
  track(socket: Duplex): void {
    this.#sockets.add(socket);
  }

  /** Connections tracked and not yet swept (closed ones included until the next sweep). */
  get size(): number {
    return this.#sockets.size;
  }

  stop(): void {
    clearInterval(this.#sweeper);
  }

  readonly #sweep = (): void => {
    for (const socket of this.#sockets) if (socket.destroyed) this.#sockets.delete(socket);
  };

  /** Called before each delivery to this instance's connections. */
  beforeDelivery(): void {
    if (this.#deliveries++ === 0) {
      setImmediate(this.#endTurn);
      return;
    }
    if (this.#corked) return;
    this.onBurst();
    this.#corked = [];
    for (const socket of this.#sockets) {
      if (socket.destroyed) {
        this.#sockets.delete(socket);
        continue;
      }
      socket.cork();
      this.#corked.push(socket);
    }
  }

  readonly #endTurn = (): void => {
    this.#deliveries = 0;
    const corked = this.#corked;
    this.#corked = undefined;
    // A socket closed meanwhile ended its writes itself; uncorking it is harmless.
    if (corked) for (const socket of corked) socket.uncork();
  };
}
