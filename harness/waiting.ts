import { sleep } from "./timeouts.js";

/**
 * Waiting for something to happen, always with a deadline: an item (a log
 * record, an output line, an event) to arrive, or a condition to hold.
 */

interface Waiter<T> {
  match: (item: T) => boolean;
  /** Hands the item out: no other `next` gets it. */
  take: boolean;
  resolve: (item: T) => void;
  reject: (err: Error) => void;
}

/**
 * What arrives over time, in order, with waits for the first item that
 * matches, already here or still to come. `next` hands each item out once (two
 * waits for "a message" get two messages); `find` does not (every wait for
 * "the listening line" gets it). After `close`, waits that nothing received can
 * satisfy fail with its reason.
 */
export class Arrivals<T> {
  readonly items: T[] = [];
  readonly #taken = new Set<number>();
  readonly #waiters = new Set<Waiter<T>>();
  readonly #listeners = new Set<(item: T) => void>();
  readonly #recent: (items: readonly T[]) => string;
  #closed: Error | undefined;

  /** @param recent what a timeout error shows of the items received. @default the last five, as JSON */
  constructor(recent: (items: readonly T[]) => string = (items) => JSON.stringify(items.slice(-5))) {
    this.#recent = recent;
  }

  push(item: T): void {
    const index = this.items.push(item) - 1;
    for (const listener of this.#listeners) listener(item);
    for (const w of this.#waiters) {
      if (w.take && this.#taken.has(index)) continue;
      if (!w.match(item)) continue;
      this.#waiters.delete(w);
      if (w.take) this.#taken.add(index);
      w.resolve(item);
    }
  }

  /** Rejects every pending and future wait that nothing already received can satisfy. */
  close(reason: Error): void {
    this.#closed = reason;
    for (const w of this.#waiters) w.reject(reason);
    this.#waiters.clear();
  }

  /** The first item not handed out yet that matches; hands it out. */
  next(match: (item: T) => boolean = () => true, timeoutMs = 5_000, what = "a matching item"): Promise<T> {
    return this.#wait({ match, take: true }, timeoutMs, what);
  }

  /** The first item that matches, handed out or not. */
  find(match: (item: T) => boolean, timeoutMs = 5_000, what = "a matching item"): Promise<T> {
    return this.#wait({ match, take: false }, timeoutMs, what);
  }

  /** Items received so far that match (handed out or not). */
  all(match: (item: T) => boolean = () => true): T[] {
    return this.items.filter(match);
  }

  /** Calls `listener` with every item that arrives from now on; returns what stops it. */
  subscribe(listener: (item: T) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  #wait(o: Pick<Waiter<T>, "match" | "take">, timeoutMs: number, what: string): Promise<T> {
    const index = this.items.findIndex((item, i) => !(o.take && this.#taken.has(i)) && o.match(item));
    if (index >= 0) {
      if (o.take) this.#taken.add(index);
      return Promise.resolve(this.items[index] as T);
    }
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received: ${this.#recent(this.items)}`));
      }, timeoutMs);
      const waiter: Waiter<T> = {
        ...o,
        resolve: (item) => {
          clearTimeout(timer);
          resolve(item);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.#waiters.add(waiter);
    });
  }
}

/**
 * Asks `probe` every `everyMs` until it answers something other than
 * undefined or false, and resolves with that. Fails when `timeoutMs` passes,
 * or at once when `giveUp` names a reason (the process it waits on exited).
 */
export async function poll<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  o: { timeoutMs: number; what: string; everyMs?: number; giveUp?: () => string | undefined },
): Promise<T> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const reason = o.giveUp?.();
    if (reason !== undefined) throw new Error(`gave up waiting for ${o.what}: ${reason}`);
    const answer = await probe();
    if (answer !== undefined && answer !== false) return answer;
    if (Date.now() >= deadline) throw new Error(`timed out after ${o.timeoutMs} ms waiting for ${o.what}`);
    await sleep(o.everyMs ?? 50);
  }
}
