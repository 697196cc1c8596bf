import type { Logger } from "../logger.js";
import { skippedPublishes } from "./outage.js";

export type QueryName = "status" | "clients" | "members";

/** A question to every instance; `members` takes a room (none: everyone). */
export interface Query {
  name: QueryName;
  room?: string;
}

export interface Gathered<T> {
  answers: T[];
  /** True when an instance did not answer in time (or Redis is away). */
  partial: boolean;
}

/**
 * How instances reach each other, carrying envelopes of type `E` without
 * looking inside. Over Redis it is the adapter's inter-server communication
 * (`serverSideEmit`); alone, it reaches nobody.
 */
export interface ClusterBus<E> {
  readonly clustered: boolean;
  /** Every other instance delivers the envelope to its own clients. */
  publish(envelope: E): void;
  /** Same, gathering the number of connections each other instance reached. */
  publishCounted(envelope: E): Promise<Gathered<number>>;
  /** Asks every other instance; answers within the timeout, never hangs. */
  query<T>(query: Query): Promise<Gathered<T>>;
  /** Installs this instance's answers to the two calls above. */
  serve(handlers: { deliver(envelope: E): number; answer(query: Query): unknown }): void;
}

export function localBus<E>(): ClusterBus<E> {
  return {
    clustered: false,
    publish() {},
    publishCounted: async () => ({ answers: [], partial: false }),
    query: async () => ({ answers: [], partial: false }),
    serve() {},
  };
}

/** The part of Socket.IO's Server the bus uses: its inter-server channel. */
export interface ServerSideChannel {
  serverSideEmit(event: string, ...args: unknown[]): boolean;
  on(event: string, listener: (...args: never[]) => void): unknown;
}

const PUBLISH = "wbs:publish";
const QUERY = "wbs:query";

/**
 * @param timeoutMs the adapter's `requestsTimeout`; the wrapper adds a margin
 *   because the adapter first counts subscribers, which waits on Redis.
 */
export function redisBus<E>(io: ServerSideChannel, opts: { timeoutMs: number; redisReady: () => boolean; log: Logger; onSkipped: () => void }): ClusterBus<E> {
  const outage = skippedPublishes(opts.log, opts.onSkipped);
  const gather = <T>(event: string, arg: unknown): Promise<Gathered<T>> => {
    if (!opts.redisReady()) return Promise.resolve({ answers: [], partial: true });
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve({ answers: [], partial: true }), opts.timeoutMs + 250);
      io.serverSideEmit(event, arg, (err: Error | null, answers: T[] | undefined) => {
        clearTimeout(timer);
        if (err) opts.log.warn({ event, err: err.message }, "cluster request partly answered");
        resolve({ answers: answers ?? [], partial: Boolean(err) });
      });
    });
  };
  return {
    clustered: true,
    publish(envelope) {
      // While Redis is away the adapter would queue the publish and replay it
      // minutes later; the local clients already have it, so skip instead.
      if (opts.redisReady()) {
        outage.published();
        io.serverSideEmit(PUBLISH, envelope);
        return;
      }
      outage.skip();
    },
    publishCounted: (envelope) => gather<number>(PUBLISH, envelope),
    query: <T>(query: Query) => gather<T>(QUERY, query),
    serve({ deliver, answer }) {
      io.on(PUBLISH, (envelope: E, ack?: (n: number) => void) => {
        // Deliver first: `ack?.(deliver(e))` would skip the delivery when no ack is asked for.
        const n = deliver(envelope);
        ack?.(n);
      });
      io.on(QUERY, (query: Query, ack?: (a: unknown) => void) => ack?.(answer(query)));
    },
  };
}
