import { fileURLToPath, pathToFileURL } from "node:url";
import type { CpuProfile } from "./inspector.js";

export interface ProfileLine {
  name: string;
  where: string;
  selfMs: number;
  percent: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Share of samples not idle. */
  busyPercent: number;
  top: ProfileLine[];
  /** Self time by package (ws, engine.io, socket.io, …), by our server code, by node internals, GC. */
  byArea: { area: string; selfMs: number; percent: number }[];
}

/** This checkout, as a URL and as a path (both with a trailing slash): frames in it are ours. */
const ROOT_URL = new URL("../..", import.meta.url).href;
const ROOT = fileURLToPath(ROOT_URL);

/** Checkouts whose frames are ours: this one, and those given (an earlier commit's, for before/after profiles). */
type Roots = { url: string; path: string }[];
const rootsOf = (extra: string[]): Roots => [
  { url: ROOT_URL, path: ROOT },
  ...extra.map((dir) => {
    const p = dir.endsWith("/") ? dir : `${dir}/`;
    return { url: pathToFileURL(p).href, path: p };
  }),
];

/** A frame's script (a file:// URL, or a path for CommonJS) relative to one of `roots`; undefined when outside them. */
function inRepo(url: string, roots: Roots = rootsOf([])): string | undefined {
  for (const r of roots) {
    if (url.startsWith(r.url)) return decodeURIComponent(url.slice(r.url.length));
    if (url.startsWith(r.path)) return url.slice(r.path.length);
  }
  return undefined;
}

/** Where a frame's code lives: a package, our server, node internals, or a V8 pseudo-frame. */
export function areaOf(url: string, functionName: string, roots?: Roots): string {
  if (!url) {
    if (functionName === "(garbage collector)") return "GC";
    if (functionName === "(idle)") return "idle";
    if (functionName === "(program)") return "V8/native (program)";
    return functionName ? `native ${functionName}` : "native";
  }
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith("node:"))
    return `node:${
      url
        .slice(5)
        .replace(/^internal\//, "")
        .split("/")[0]
    }`;
  const rel = inRepo(url, roots);
  if (rel !== undefined) return `ours: ${rel.split("/")[0]}/`;
  return url
    .replace(/^file:\/\//, "")
    .split("/")
    .slice(-2)
    .join("/");
}

function shortWhere(url: string, line: number, roots: Roots): string {
  if (!url) return "";
  const path = url.replace(/^file:\/\//, "");
  const nm = path.lastIndexOf("node_modules/");
  const rel = nm >= 0 ? path.slice(nm + "node_modules/".length) : (inRepo(url, roots) ?? path);
  return `${rel}:${line + 1}`;
}

/** Self time per function (from samples and timeDeltas), the top `limit` and per area; frames under `ourRoots` (more checkouts) count as ours. */
export function summarizeProfile(profile: CpuProfile, limit = 15, ourRoots: string[] = []): ProfileSummary {
  const roots = rootsOf(ourRoots);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length > 0) {
    // timeDeltas[i] is the time before sample i; the time after it belongs to it.
    for (let i = 0; i < samples.length; i++) {
      const dt = deltas[i + 1] ?? 0;
      selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + Math.max(0, dt));
    }
  } else {
    const total = profile.endTime - profile.startTime;
    const hits = profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0) || 1;
    for (const node of profile.nodes) selfUs.set(node.id, ((node.hitCount ?? 0) / hits) * total);
  }
  const byFn = new Map<string, { name: string; where: string; us: number; area: string }>();
  const byArea = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const area = areaOf(url, functionName, roots);
    total += us;
    if (area === "idle") {
      idle += us;
      continue;
    }
    const key = `${functionName}|${url}|${lineNumber}`;
    const e = byFn.get(key) ?? { name: functionName || "(anonymous)", where: shortWhere(url, lineNumber, roots), us: 0, area };
    e.us += us;
    byFn.set(key, e);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const busy = total - idle;
  const pct = (us: number) => (busy > 0 ? Math.round((us / busy) * 1000) / 10 : 0);
  return {
    totalMs: Math.round(total / 1000),
    busyPercent: total > 0 ? Math.round((busy / total) * 1000) / 10 : 0,
    top: [...byFn.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, limit)
      .map((e) => ({ name: e.name, where: e.where || e.area, selfMs: Math.round(e.us / 100) / 10, percent: pct(e.us) })),
    byArea: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([area, us]) => ({ area, selfMs: Math.round(us / 100) / 10, percent: pct(us) })),
  };
}
