type Waiter = { resolve: (value: unknown) => void; reject: (err: Error) => void; timer: NodeJS.Timeout };

/**
 * Requests awaiting an answer from a peer, by id: each is settled by its
 * answer, fails after its own timeout, or fails with the rest when the peer goes.
 */
export class PendingReplies {
  #nextId = 1;
  readonly #waiting = new Map<number, Waiter>();

  /** Sends a request under a new id (`send` may throw: the request fails) and resolves with its answer. */
  request<T>(timeoutMs: number, timeoutMessage: () => string, send: (id: number) => void): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(id, new Error(timeoutMessage())), timeoutMs);
      this.#waiting.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      try {
        send(id);
      } catch (err) {
        this.fail(id, err as Error);
      }
    });
  }

  /** The peer's answer to `id`: an error message, or the result. Unknown ids (timed out already) are ignored. */
  settle(id: number, error: string | undefined, result: unknown): void {
    const w = this.#take(id);
    if (!w) return;
    if (error !== undefined) w.reject(new Error(error));
    else w.resolve(result);
  }

  fail(id: number, err: Error): void {
    this.#take(id)?.reject(err);
  }

  failAll(err: Error): void {
    for (const id of [...this.#waiting.keys()]) this.fail(id, err);
  }

  #take(id: number): Waiter | undefined {
    const w = this.#waiting.get(id);
    if (!w) return undefined;
    this.#waiting.delete(id);
    clearTimeout(w.timer);
    return w;
  }
}
