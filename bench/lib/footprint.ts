import { nofileLimit, openFds, rssBytes } from "../../harness/procfs.js";

/** One process as /proc sees it: resident memory, open descriptors and its descriptor limit (hard). */
export interface ProcessFootprint {
  pid: number;
  rss: number;
  fds: number;
  fdLimit: number;
}

/** Processes by role (`instances`, `nginx workers`, `redis`, `generator`, …). */
export type Footprints = Record<string, ProcessFootprint[]>;

/** Reads every process of every role now; a process gone meanwhile is left out. */
export function readFootprints(roles: Record<string, number[]>): Footprints {
  const out: Footprints = {};
  for (const [role, pids] of Object.entries(roles)) {
    out[role] = pids.flatMap((pid) => {
      const rss = rssBytes(pid);
      if (rss === undefined) return [];
      return [{ pid, rss, fds: openFds(pid), fdLimit: nofileLimit(pid)?.hard ?? NaN }];
    });
  }
  return out;
}

const sumRss = (ps: ProcessFootprint[] | undefined): number => (ps ?? []).reduce((n, p) => n + p.rss, 0);

/**
 * What each role's resident memory grew by between two readings, per
 * connection (bytes): the sum over its processes (instances replaced
 * meanwhile would make this meaningless: the scenarios that use it restart none).
 */
export function rssGrowthPerConnection(before: Footprints, after: Footprints, connections: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const role of Object.keys(after)) out[role] = connections > 0 ? Math.round((sumRss(after[role]) - sumRss(before[role])) / connections) : NaN;
  return out;
}

/** The sum of each role's resident memory, bytes. */
export const rssByRole = (f: Footprints): Record<string, number> => Object.fromEntries(Object.entries(f).map(([role, ps]) => [role, sumRss(ps)]));
