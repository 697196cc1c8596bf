import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";

/** How often queued bytes are checked: a memory guard, so a second of slack is fine. */
const SWEEP_MS = 1_000;

/**
 * A client that reads slower than broadcasts arrive makes this process queue
 * its frames without bound (ws and Engine.IO buffer whatever they are given).
 * Once a client's unsent bytes pass `limit` it is cut: the connection is
 * dropped at once (a close frame would wait behind the backlog), so it frees
 * its memory now and reconnects with a clean slate; everyone else goes on.
 */
export function guardSlowClients<C>(opts: {
  transport: string;
  limit: number;
  log: Logger;
  metrics: Metrics;
  clients: () => Iterable<C>;
  /** Bytes queued in this process for the client. */
  queued: (client: C) => number;
  idOf: (client: C) => string | undefined;
  cut: (client: C) => void;
}): { stop(): void } {
  if (opts.limit <= 0) return { stop: () => undefined };
  const timer = setInterval(() => {
    for (const client of opts.clients()) {
      const bytes = opts.queued(client);
      if (bytes <= opts.limit) continue;
      opts.metrics.slowClientsCut.inc({ transport: opts.transport });
      opts.log.warn({ clientId: opts.idOf(client), transport: opts.transport, queuedBytes: bytes, limit: opts.limit }, "slow client cut: too much unsent data");
      opts.cut(client);
    }
  }, SWEEP_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
