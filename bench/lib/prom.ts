/** The instances' GET /metrics (Prometheus text), read by the abuse scenario before and after each phase. */

/** GET /metrics of every URL (an instance's own, not nginx's): the text, or undefined when it did not answer. */
export function scrapeMetrics(urls: string[]): Promise<(string | undefined)[]> {
  return Promise.all(
    urls.map((url) =>
      fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) }).then(
        (r) => (r.ok ? r.text() : undefined),
        () => undefined,
      ),
    ),
  );
}

/** The samples of counter `name` in one text: labels (`a="x",b="y"`) and value. */
function* samples(text: string, name: string): Generator<{ labels: string; value: number }> {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) yield { labels: m[2] ?? "", value: Number(m[3]) };
  }
}

/**
 * A counter summed over the instances' samples (those whose labels include
 * `label`, e.g. `origin="ws"`, when given); undefined when no instance
 * exposes it at all (an older server).
 */
export function counter(texts: (string | undefined)[], name: string, label?: string): number | undefined {
  let present = false;
  let total = 0;
  for (const text of texts) {
    if (!text?.includes(`# TYPE ${name} `)) continue;
    present = true;
    for (const s of samples(text, name)) if (label === undefined || s.labels.split(",").includes(label)) total += s.value;
  }
  return present ? total : undefined;
}

/** A counter summed over the instances by the value of one label (`code` of wbs_refusals_total); undefined when no instance has it. */
export function counterBy(texts: (string | undefined)[], name: string, key: string): Record<string, number> | undefined {
  let present = false;
  const out: Record<string, number> = {};
  const re = new RegExp(`(?:^|,)${key}="([^"]*)"`);
  for (const text of texts) {
    if (!text?.includes(`# TYPE ${name} `)) continue;
    present = true;
    for (const s of samples(text, name)) {
      const value = re.exec(s.labels)?.[1] ?? "";
      out[value] = (out[value] ?? 0) + s.value;
    }
  }
  return present ? out : undefined;
}

/** Every `wbs_` counter sample summed over the instances, by `name{labels}`. */
export function wbsCounters(texts: (string | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const text of texts) {
    if (!text) continue;
    for (const name of text.matchAll(/^# TYPE (wbs_\w+) counter$/gm)) {
      for (const s of samples(text, name[1]!)) {
        const key = s.labels ? `${name[1]}{${s.labels}}` : name[1]!;
        out[key] = (out[key] ?? 0) + s.value;
      }
    }
  }
  return out;
}

export const delta = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : b - a);

/** What moved between two readings of the same keys (only those that did); a key new in `b` counts from 0. */
export function deltas(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v !== (a[k] ?? 0)) out[k] = v - (a[k] ?? 0);
  return out;
}
