import { randomBytes } from "node:crypto";
import type { Logger } from "../logger.js";
import type { ClusterReply, ClusterRequest } from "../protocol.js";
import { skippedPublishes } from "./outage.js";

export type QueryName = "status" | "clients" | "members" | "user" | "disconnect";

/** A question to every instance; `members` takes a room (none: everyone), `user` and `disconnect` a user. */
export interface Query {
  name: QueryName;
  room?: string;
  user?: string;
  reason?: string;
  code?: number;
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

/** The part of Socket.IO's Server the bus uses: its inter-server channel, and how many servers listen. */
export interface ServerSideChannel {
  serverSideEmit(event: string, ...args: unknown[]): boolean;
  on(event: string, listener: (...args: never[]) => void): unknown;
  serverCount(): Promise<number>;
}

const PUBLISH = "wbs:publish";
const REQUEST = "wbs:request";
const REPLY = "wbs:reply";

// The wire shapes (protocol.ts); the bus itself does not look inside body or answer.
type Request = ClusterRequest;
type Reply = ClusterReply;

/**
 * Requests and their answers are our own messages over the adapter's
 * inter-server channel, not its acknowledgements: the sharded adapter waits a
 * fixed 5 s for a missing answer and then reports none of the answers it got,
 * where a cluster query must answer within `timeoutMs` with what it has.
 */
export function redisBus<E>(io: ServerSideChannel, opts: { timeoutMs: number; redisReady: () => boolean; log: Logger; onSkipped: () => void }): ClusterBus<E> {
  const outage = skippedPublishes(opts.log, opts.onSkipped);
  const self = randomBytes(9).toString("base64url");
  let nextId = 0;
  const pending = new Map<number, { answers: unknown[]; expected: number; finish: (partial: boolean) => void }>();

  io.on(REPLY, (reply: Reply) => {
    if (reply?.to !== self) return; // replies travel to every instance; this one was not ours
    const request = pending.get(reply.id);
    if (!request) return; // late: that request already answered partial
    request.answers.push(reply.answer);
    if (request.answers.length >= request.expected) request.finish(false);
  });

  const gather = async <T>(kind: Request["kind"], body: unknown): Promise<Gathered<T>> => {
    if (!opts.redisReady()) return { answers: [], partial: true };
    const deadline = Date.now() + opts.timeoutMs;
    // Unknown (Redis slow or failing over): gather until the deadline and say partial.
    let countTimer: NodeJS.Timeout | undefined;
    const others = await Promise.race([
      io.serverCount().then((n) => n - 1),
      new Promise<number>((r) => {
        countTimer = setTimeout(r, opts.timeoutMs, Number.POSITIVE_INFINITY);
      }),
    ])
      .catch(() => Number.POSITIVE_INFINITY)
      .finally(() => clearTimeout(countTimer));
    if (others <= 0) return { answers: [], partial: false };
    const id = nextId++;
    return new Promise((resolve) => {
      const answers: T[] = [];
      const finish = (partial: boolean) => {
        clearTimeout(timer);
        pending.delete(id);
        if (partial && Number.isFinite(others)) opts.log.warn({ kind, answered: answers.length, expected: others }, "cluster request partly answered");
        resolve({ answers, partial: partial || !Number.isFinite(others) });
      };
      const timer = setTimeout(finish, Math.max(0, deadline - Date.now()), true);
      pending.set(id, { answers, expected: others, finish });
      io.serverSideEmit(REQUEST, { from: self, id, kind, body: body as Request["body"] } satisfies Request);
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
    publishCounted: (envelope) => gather<number>("publish", envelope),
    query: <T>(query: Query) => gather<T>("query", query),
    serve({ deliver, answer }) {
      io.on(PUBLISH, (envelope: E) => void deliver(envelope));
      io.on(REQUEST, (request: Request) => {
        if (typeof request?.from !== "string") return;
        const result = request.kind === "publish" ? deliver(request.body as E) : answer(request.body as Query);
        io.serverSideEmit(REPLY, { to: request.from, id: request.id, answer: result as Reply["answer"] } satisfies Reply);
      });
    },
  };
}

/** The bus an instance speaks: over the adapter's inter-server channel when there is Redis, to nobody alone. */
export function createBus<E>(
  channel: ServerSideChannel,
  redis: { readonly ready: boolean } | undefined,
  opts: { timeoutMs: number; log: Logger; onSkipped: () => void },
): ClusterBus<E> {
  return redis ? redisBus<E>(channel, { ...opts, redisReady: () => redis.ready }) : localBus<E>();
}
