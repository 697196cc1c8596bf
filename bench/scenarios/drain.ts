import { isInterrupted } from "../../harness/processes.js";
import { addRecoveryCounts, noRecoveryCounts, type RecoveryCounts } from "../../harness/rolling-restart.js";
import type { StackEvent } from "../../harness/stack.js";
import { sleep } from "../../harness/timeouts.js";
import { nowUs } from "../lib/clock.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import { Publisher } from "../publisher.js";
import type { ClusterHost } from "../targets.js";
import type { Ctx } from "./context.js";

export interface DrainResult {
  clients: number;
  connected: number;
  publishRatePerSec: number;
  published: number;
  drainedInstance: string;
  forcedShutdownSec: number;
  /** SIGTERM to exit of the drained instance. */
  drainMs: number | undefined;
  /** SIGTERM to its replacement answering /readyz. */
  replacementReadyMs: number | undefined;
  /**
   * Clients that never lost their connection: every broadcast should reach
   * them. `lost`: skipped (a later one arrived, this one never will);
   * `notArrived`: still missing at the end (late beyond the wait, or lost at
   * the tail); `lastArrivedAfterMs`: how long after the last publish the
   * last of them arrived (the wait is 15 s at most).
   */
  stayed: { clients: number; lost: number; notArrived: number; lastArrivedAfterMs: number; duplicates: number };
  /**
   * Clients of the drained instance: closed at the deadline, reconnected
   * through nginx, sending their last offset and epoch (recovery). `missed`:
   * published since tracking began and never received, replays included;
   * `outOfOrder`: received after a later one; `resumes`: reconnects that sent
   * an offset, `recovered`/`notRecovered` what their welcomes said,
   * `replayed` the broadcasts the welcomes announced.
   */
  moved: RecoveryCounts & { clients: number; missed: number; from: Record<string, number> };
  reconnectWave: { reconnects: number; failedAttempts: number; errors: Record<string, number>; durationMs: number | undefined; time: LatencySummary };
  openAtEnd: number;
  pendingReconnectsAtEnd: number;
}

/** Just the recovery counts of a bucket. */
function recoveryCountsOf(from: RecoveryCounts): RecoveryCounts {
  const out = noRecoveryCounts();
  addRecoveryCounts(out, from);
  return out;
}

/**
 * Drain under load: clients through nginx (they reconnect like
 * socket.io-client: 0.5–1.5 s, doubling, sending their last offset and epoch),
 * a publisher on ws1 directly, then ws2 is drained and replaced
 * (stack.restartInstance) while broadcasts flow.
 */
export async function runDrain(ctx: Ctx, host: ClusterHost): Promise<DrainResult> {
  const { opts, fleet, progress } = ctx;
  const target = host.targets.find((t) => t.name === "sio-4-nginx")!;
  const drainIndex = 1;
  const events: { e: StackEvent; us: number }[] = [];
  const off = host.onEvent((e) => events.push({ e, us: nowUs() }));
  let publisher: Publisher | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    progress.phase(`drain: connecting ${opts.drainClients} clients through nginx`, () => `${fleet.live.open} open, ${fleet.live.failed} failed`);
    const conn = await fleet.connect({
      group: "drain",
      kind: "sio",
      mode: "fanout",
      urls: target.clientUrls,
      count: opts.drainClients,
      ratePerSec: 0,
      concurrency: 200,
      spreadAfter: opts.spreadAfter,
      reconnect: true,
      recover: true,
      idPrefix: "drain",
      timeoutMs: 15_000,
    });
    publisher = await Publisher.connect("sio", host.stack.instanceUrl(0), opts.payloadBytes);
    const firstSeq = ctx.nextSeq();
    let lastSeq = firstSeq - 1;
    await fleet.track(firstSeq, false, "drain");
    const pub = publisher;
    const publishOne = () => {
      lastSeq = lastSeq < firstSeq ? firstSeq : ctx.nextSeq();
      pub.publish(lastSeq);
    };
    timer = setInterval(publishOne, 1000 / opts.drainRate);
    const status = () => {
      const l = fleet.live;
      return `${l.open}/${opts.drainClients} open, ${lastSeq - firstSeq + 1} published`;
    };
    progress.phase("drain: publishing", status);
    await sleep(2_000);

    const drained = host.stack.instances[drainIndex]!;
    progress.phase(`drain: SIGTERM ${drained.id} (forced close after ${opts.drainForcedSec}s), replacing it`, status);
    const restarted = host.stack.restartInstance(drainIndex);
    restarted.catch(() => undefined);
    // Bounded: the drain deadline plus a margin for the exit, then the reconnect wave. The
    // replacement's start is not waited for (on a busy machine it takes long); stop() does.
    const exitDeadline = performance.now() + opts.drainForcedSec * 1000 + 15_000;
    while (performance.now() < exitDeadline && !isInterrupted() && !events.some((x) => x.e.type === "instance-exited" && x.e.index === drainIndex)) {
      await sleep(50);
    }
    progress.phase("drain: waiting for the reconnect wave", status);
    const deadline = performance.now() + 20_000;
    while (performance.now() < deadline && !isInterrupted()) {
      const d = await fleet.delivery("drain");
      if (d.open >= conn.opened && d.pendingReconnects === 0) break;
      await sleep(250);
    }
    await sleep(1_000);
    clearInterval(timer);
    timer = undefined;
    const published = lastSeq - firstSeq + 1;
    // The last broadcasts may still be on their way (queues behind the reconnect wave, replays):
    // wait until every client that stayed has the last one and every moved one has them all, or 15 s.
    progress.phase("drain: waiting for the last broadcasts to arrive", status);
    const stopped = performance.now();
    let d = await fleet.delivery("drain");
    const arrived = () => d.stayed.sumLastSeq >= d.stayed.clients * lastSeq && d.moved.received >= d.moved.clients * published;
    while (performance.now() - stopped < 15_000 && !isInterrupted() && !arrived()) {
      await sleep(100);
      d = await fleet.delivery("drain");
    }
    const tailMs = Math.round(performance.now() - stopped);
    const at = (pred: (e: StackEvent) => boolean) => events.find((x) => pred(x.e))?.us;
    const sigterm = at((e) => e.type === "instance-draining" && e.index === drainIndex);
    const exited = at((e) => e.type === "instance-exited" && e.index === drainIndex);
    const ready = at((e) => e.type === "instance-ready" && e.index === drainIndex && e.restart);
    const result: DrainResult = {
      clients: opts.drainClients,
      connected: conn.opened,
      publishRatePerSec: opts.drainRate,
      published,
      drainedInstance: drained.id,
      forcedShutdownSec: opts.drainForcedSec,
      drainMs: sigterm !== undefined && exited !== undefined ? Math.round((exited - sigterm) / 1000) : undefined,
      replacementReadyMs: sigterm !== undefined && ready !== undefined ? Math.round((ready - sigterm) / 1000) : undefined,
      stayed: {
        clients: d.stayed.clients,
        lost: d.stayed.skipped,
        notArrived: d.stayed.clients * lastSeq - d.stayed.sumLastSeq,
        lastArrivedAfterMs: tailMs,
        duplicates: d.stayed.duplicates,
      },
      moved: { clients: d.moved.clients, missed: d.moved.clients * published - d.moved.received, ...recoveryCountsOf(d.moved), from: d.movedFrom },
      reconnectWave: {
        reconnects: d.reconnects,
        failedAttempts: d.reconnectFailures,
        errors: d.reconnectErrors,
        durationMs:
          d.firstDisconnectUs !== undefined && d.lastReconnectUs !== undefined ? Math.round((d.lastReconnectUs - d.firstDisconnectUs) / 1000) : undefined,
        time: summarize(d.reconnectTimes),
      },
      openAtEnd: d.open,
      pendingReconnectsAtEnd: d.pendingReconnects,
    };
    progress.log(
      `  drain: ${drained.id} drained in ${result.drainMs} ms; ${result.moved.clients} clients moved (wave ${result.reconnectWave.durationMs} ms, p99 ${result.reconnectWave.time.p99} ms); lost by clients that stayed: ${result.stayed.lost} (${result.stayed.notArrived} not arrived after ${result.stayed.lastArrivedAfterMs} ms); moved clients missed ${result.moved.missed}, duplicates ${result.moved.duplicates}, out of order ${result.moved.outOfOrder}, resumes ${result.moved.resumes} (recovered ${result.moved.recovered}, not ${result.moved.notRecovered})`,
    );
    return result;
  } finally {
    if (timer) clearInterval(timer);
    off();
    publisher?.close();
    progress.phase("drain: closing clients", () => `${fleet.live.open} open`);
    await fleet.closeAll("drain");
  }
}
