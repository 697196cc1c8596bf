/** The figures of GET /metrics (Prometheus text), by series: `name` or `name{label="value",...}`. */
export type MetricSeries = Map<string, number>;

/** GET /metrics, parsed. Rejects when the instance does not answer within `timeoutMs`. */
export async function readMetrics(baseUrl: string, timeoutMs = 3_000): Promise<MetricSeries> {
  const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}

export function parseMetrics(text: string): MetricSeries {
  const out: MetricSeries = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(\S+?(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** One value; undefined when the series is absent. */
export const metric = (m: MetricSeries, series: string): number | undefined => m.get(series);

/** `wbs_connections{transport,via}` summed by transport (socket.io, ws), and their sum. */
export function connections(m: MetricSeries): { byTransport: Record<string, number>; total: number } {
  const byTransport: Record<string, number> = {};
  let total = 0;
  for (const [series, value] of m) {
    const t = /^wbs_connections\{transport="([^"]*)",via="[^"]*"\}$/.exec(series)?.[1];
    if (t === undefined) continue;
    byTransport[t] = (byTransport[t] ?? 0) + value;
    total += value;
  }
  return { byTransport, total };
}

/** What tests compare: live connections by transport and the clientIds held. */
export interface Holdings {
  byTransport: Record<string, number>;
  connections: number;
  /** `wbs_client_ids`; undefined when the server does not export it. */
  clientIds: number | undefined;
}

export async function holdings(baseUrl: string): Promise<Holdings> {
  const m = await readMetrics(baseUrl);
  const c = connections(m);
  return { byTransport: c.byTransport, connections: c.total, clientIds: metric(m, "wbs_client_ids") };
}

/**
 * Polls GET /metrics (bounded) until `done` holds, and answers the last
 * reading; rejects with that reading when the deadline passes first.
 */
export async function waitForHoldings(baseUrl: string, done: (h: Holdings) => boolean, what: string, timeoutMs = 3_000): Promise<Holdings> {
  const deadline = Date.now() + timeoutMs;
  let last: Holdings | undefined;
  let pause = 5;
  for (;;) {
    last = await holdings(baseUrl);
    if (done(last)) return last;
    // A series the server does not export will not appear by waiting.
    if (last.clientIds === undefined) throw new Error(`${what}: GET /metrics has no wbs_client_ids; reading: ${JSON.stringify(last)}`);
    if (Date.now() >= deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms; last /metrics reading: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 100);
  }
}

/**
 * The registry invariant at rest: no /ws connection is left and every
 * clientId held belongs to a live connection (`wbs_client_ids` equals the sum
 * of `wbs_connections`). Socket.IO polling sessions may outlive the test's
 * sockets until their ping timeout, so they may still count.
 */
export const settled = (h: Holdings): boolean => (h.byTransport.ws ?? 0) === 0 && h.clientIds === h.connections;
