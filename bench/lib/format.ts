/** Number and table formatting shared by the report's sections. */

export const KIB = 1024;
export const MIB = 1024 * 1024;

export const round = (v: number, d = 2) => (Number.isFinite(v) ? Math.round(v * 10 ** d) / 10 ** d : NaN);
/** An integer with thousands separators; "–" when not a number. */
export const n0 = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString("en-US") : "–");
/** At most `d` decimals; "–" when not a number. */
export const f = (v: number | undefined, d = 2) => (v === undefined || !Number.isFinite(v) ? "–" : String(round(v, d)));

/** A plain-text table for the console; numbers right-aligned unless `align` says otherwise. */
export function table(header: string[], rows: string[][], align?: ("l" | "r")[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const pad = (s: string, i: number) => ((align?.[i] ?? (i === 0 ? "l" : "r")) === "l" ? s.padEnd(widths[i]!) : s.padStart(widths[i]!));
  return [header.map(pad).join("  "), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map((r) => r.map(pad).join("  "))].join("\n");
}

/** A Markdown table; numbers right-aligned unless `left` says a column holds text. */
export function md(header: string[], rows: string[][], left: number[] = [0]): string {
  const rule = header.map((_, i) => (left.includes(i) ? "---" : "---:")).join(" | ");
  return [`| ${header.join(" | ")} |`, `| ${rule} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}
