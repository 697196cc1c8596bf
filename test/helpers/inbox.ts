/**
 * Collects what arrives (events, frames) and lets a test wait for the first
 * item, already here or still to come, that matches. Each item is handed out
 * once, so two waits for "a message" get two different messages.
 */
export class Inbox<T> {
  readonly items: T[] = [];
  readonly #taken = new Set<number>();
  readonly #waiters = new Set<{ match: (item: T) => boolean; resolve: (item: T) => void; reject: (err: Error) => void }>();
  #closed: Error | undefined;

  push(item: T): void {
    const index = this.items.push(item) - 1;
    for (const w of this.#waiters) {
      if (w.match(item)) {
        this.#waiters.delete(w);
        this.#taken.add(index);
        w.resolve(item);
        return;
      }
    }
  }

  /** Rejects every pending and future wait that nothing already received can satisfy. */
  close(reason: Error): void {
    this.#closed = reason;
    for (const w of this.#waiters) w.reject(reason);
    this.#waiters.clear();
  }

  next(match: (item: T) => boolean = () => true, timeoutMs = 5_000, what = "a matching item"): Promise<T> {
    const index = this.items.findIndex((item, i) => !this.#taken.has(i) && match(item));
    if (index >= 0) {
      this.#taken.add(index);
      return Promise.resolve(this.items[index] as T);
    }
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (item: T) => {
          clearTimeout(timer);
          resolve(item);
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received: ${JSON.stringify(this.items.slice(-5))}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** Items received so far that match (taken or not). */
  all(match: (item: T) => boolean = () => true): T[] {
    return this.items.filter(match);
  }
}
