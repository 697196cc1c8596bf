/**
 * Wall-clock microseconds since a shared epoch, comparable across processes on
 * this machine. `performance.now()` is per-process, so it is anchored to the
 * wall clock through `performance.timeOrigin` (sub-millisecond precision);
 * the epoch keeps the numbers small enough to print and parse as integers.
 */
let epochMs = Math.floor(performance.timeOrigin);

/** Set by the parent and handed to every generator child, so all use the same epoch. */
export function setEpoch(ms: number): void {
  epochMs = ms;
}

export function epoch(): number {
  return epochMs;
}

/** Microseconds since the shared epoch. */
export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now() - epochMs) * 1000);
}
