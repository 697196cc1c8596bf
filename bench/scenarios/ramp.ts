import { isInterrupted } from "../../harness/processes.js";
import { sleep } from "../../harness/timeouts.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import type { Target, TargetName } from "../targets.js";
import { type Ctx, Interrupted } from "./context.js";

export interface RampStep {
  /** ramp: rising rate; fill: the last clean rate, until an error. */
  phase: "ramp" | "fill";
  ratePerSec: number;
  attempted: number;
  opened: number;
  failed: number;
  achievedPerSec: number;
  connect: LatencySummary;
  /** Open connections after the step. */
  open: number;
  errors: Record<string, number>;
}

export interface RampResult {
  target: TargetName;
  steps: RampStep[];
  /** Open connections after the last step with no failed connect and no drop (ramp or fill), still open after the hold. */
  heldWithoutErrors: number;
  peakOpen: number;
  /** Highest step rate with no error and p99 connect ≤ 1 s. */
  maxCleanRate: number;
  stoppedBecause: string;
  /** Why the fill (after a ramp stopped on slowness) stopped. */
  fillStoppedBecause: string | undefined;
  hold: { seconds: number; openAfter: number; drops: number };
  /** nginx's error.log during the run, by message. */
  nginxErrors: Record<string, number>;
}

const P99_LIMIT_MS = 1_000;

/**
 * Connection ramp: steps of `rampStepMs` at a rate growing by `rampFactor`,
 * every connection kept, until a connect fails, the step's p99 connect time
 * passes 1 s, or `rampMax` (bounded by the generator's descriptors) is
 * reached. If it stopped on slowness, a fill at the last clean rate until a
 * connect fails: the most concurrent clients held without errors. Then a
 * short hold: are they all still there?
 */
export async function runRamp(ctx: Ctx, target: Target, nginxErrors: () => Record<string, number> = () => ({})): Promise<RampResult> {
  const { opts, fleet, progress } = ctx;
  const group = `ramp-${target.name}`;
  await fleet.stats(true, group);
  const max = Math.min(opts.rampMax, fleet.capacity);
  const steps: RampStep[] = [];
  let total = 0;
  let held = 0;
  let maxCleanRate = 0;
  const capped = max < opts.rampMax ? `the generator's capacity (${fleet.capacity} connections)` : `--ramp-max ${opts.rampMax}`;
  let stoppedBecause = `reached ${capped}`;
  let fillStoppedBecause: string | undefined;

  /** One step: `count` connections at `rate`; answers whether it was clean and why not. */
  const step = async (phase: "ramp" | "fill", rate: number): Promise<{ ok: boolean; errorFree: boolean; why: string }> => {
    const count = Math.min(Math.round((rate * opts.rampStepMs) / 1000), max - total);
    progress.phase(`${phase} ${target.name}: ${Math.round(rate)}/s, ${total} → ${total + count}`, () => {
      const l = fleet.live;
      return `${l.open} open, ${l.connecting} connecting, ${l.failed} failed`;
    });
    const r = await fleet.connect({
      group,
      kind: target.kind,
      mode: "idle",
      urls: target.clientUrls,
      count,
      ratePerSec: rate,
      concurrency: Math.max(500, Math.round(rate)),
      spreadAfter: opts.spreadAfter,
      reconnect: false,
      idPrefix: "ramp",
      timeoutMs: 10_000,
    });
    total += count;
    const s = await fleet.stats(false, group);
    const st: RampStep = {
      phase,
      ratePerSec: Math.round(rate),
      attempted: count,
      opened: r.opened,
      failed: r.failed,
      achievedPerSec: Math.round(r.opened / (r.elapsedMs / 1000)),
      connect: summarize(r.connectTimes),
      open: s.open,
      errors: r.errors,
    };
    steps.push(st);
    progress.log(
      `  ${phase} ${target.name}: ${st.ratePerSec}/s asked, ${st.achievedPerSec}/s done, p99 ${st.connect.p99} ms, ${st.failed} failed, ${st.open} open`,
    );
    const errorFree = r.failed === 0 && s.drops === 0;
    const why =
      r.failed > 0
        ? `${r.failed} connects failed at ${st.ratePerSec}/s with ${s.open} open (${Object.entries(r.errors)
            .slice(0, 3)
            .map(([k, v]) => `${v}× ${k}`)
            .join("; ")})`
        : s.drops > 0
          ? `${s.drops} connections dropped with ${s.open} open`
          : `p99 connect ${st.connect.p99} ms > ${P99_LIMIT_MS} ms at ${st.ratePerSec}/s`;
    if (errorFree) held = s.open;
    return { ok: errorFree && st.connect.p99 <= P99_LIMIT_MS, errorFree, why };
  };

  try {
    // The ramp: the rate grows until an error or a p99 connect time over 1 s.
    let rate = opts.rampStartRate;
    let errorFree = true;
    while (total < max) {
      if (isInterrupted()) throw new Interrupted();
      const r = await step("ramp", rate);
      if (!r.ok) {
        stoppedBecause = r.why;
        errorFree = r.errorFree;
        break;
      }
      maxCleanRate = Math.max(maxCleanRate, Math.round(rate));
      rate *= opts.rampFactor;
    }
    // The fill: if it stopped on slowness, not errors, keep adding at the last clean rate
    // until an error: the most concurrent clients held.
    if (errorFree && total < max) {
      fillStoppedBecause = `reached ${capped}`;
      const fillRate = Math.max(maxCleanRate, opts.rampStartRate);
      while (total < max) {
        if (isInterrupted()) throw new Interrupted();
        const r = await step("fill", fillRate);
        if (!r.errorFree) {
          fillStoppedBecause = r.why;
          break;
        }
      }
    }
    // Are they still there a moment later?
    const holdMs = 2_000;
    progress.phase(`ramp ${target.name}: holding ${holdMs / 1000}s`, () => `${fleet.live.open} open`);
    await sleep(holdMs);
    const after = await fleet.stats(false, group);
    if (after.drops > 0) held = Math.min(held, after.open);
    return {
      target: target.name,
      steps,
      heldWithoutErrors: held,
      peakOpen: Math.max(0, ...steps.map((s) => s.open)),
      maxCleanRate,
      stoppedBecause,
      fillStoppedBecause,
      hold: { seconds: holdMs / 1000, openAfter: after.open, drops: after.drops },
      nginxErrors: nginxErrors(),
    };
  } finally {
    progress.phase(`ramp ${target.name}: closing`, () => `${fleet.live.open} open`);
    await fleet.closeAll(group);
  }
}
