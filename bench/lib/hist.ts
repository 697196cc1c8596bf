import * as hdr from "hdr-histogram-js";

export type Histogram = hdr.Histogram;

/** Values in microseconds, 3 significant digits, growing as needed. */
export function newHistogram(): Histogram {
  return hdr.build({ numberOfSignificantValueDigits: 3, autoResize: true, lowestDiscernibleValue: 1 });
}

export const encodeHistogram = (h: Histogram): string => hdr.encodeIntoCompressedBase64(h);

/** Adds encoded histograms (one per generator child) into one. */
export function mergeEncoded(encoded: (string | undefined)[]): Histogram {
  const total = newHistogram();
  for (const e of encoded) if (e) total.add(hdr.decodeFromCompressedBase64(e));
  return total;
}

/** Percentiles in milliseconds (the histograms hold microseconds). */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

const ms = (us: number): number => Math.round(us) / 1000;

export function summarize(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, p999: NaN, max: NaN, mean: NaN };
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

/** Summary of a plain list of microsecond values (few: broadcast completions). */
export function summarizeValues(values: number[]): LatencySummary {
  const h = newHistogram();
  for (const v of values) h.recordValue(Math.max(1, Math.round(v)));
  return summarize(h);
}
