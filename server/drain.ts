import { EventEmitter } from "node:events";

export type DrainPhase = "running" | "draining" | "closed";

/**
 * The one drain state of an instance. Every entry point (Engine.IO handshake,
 * Socket.IO namespace middleware, /ws upgrade, readiness probe) reads
 * `draining`; the shutdown coordinator is the only writer.
 */
export class DrainState extends EventEmitter<{ draining: []; closed: [] }> {
  #phase: DrainPhase = "running";
  #since: number | undefined;

  get phase(): DrainPhase {
    return this.#phase;
  }

  /** True from the first moment of a drain until the process is gone: refuse new clients. */
  get draining(): boolean {
    return this.#phase !== "running";
  }

  /** When the drain began (ms since epoch), if it has. */
  get since(): number | undefined {
    return this.#since;
  }

  /** Returns false when already draining or closed, so callers can tell a second signal. */
  begin(): boolean {
    if (this.#phase !== "running") return false;
    this.#phase = "draining";
    this.#since = Date.now();
    this.emit("draining");
    return true;
  }

  close(): void {
    if (this.#phase === "closed") return;
    this.#since ??= Date.now();
    this.#phase = "closed";
    this.emit("closed");
  }
}
