import { CpuMeter } from "../../harness/procfs.js";
import { sleep } from "../../harness/timeouts.js";
import { type LatencySummary, summarize } from "../lib/hist.js";
import type { Target, TargetName } from "../targets.js";
import type { Ctx } from "./context.js";

export interface EchoCell {
  target: TargetName;
  /** What a round trip is on this target. */
  path: string;
  clients: number;
  connected: number;
  ratePerSec: number;
  seconds: number;
  sent: number;
  answered: number;
  errors: number;
  rtt: LatencySummary;
  cpu: Record<string, number>;
}

const PATHS: Record<string, string> = {
  raw: "text frame to /echo, echoed to the sender",
  ws: "text frame to /ws/{id}, `Server echo: …` back",
  sio: "`message` with ack to an empty room (full message path, no fan-out); the ack back",
  "sio-stock": "`message` with ack to an empty room (`io.to(room).emit`); the ack back",
};

/** Request/response round trips at a fixed total rate, spread over `echoClients` connections. */
export async function runEcho(ctx: Ctx, target: Target): Promise<EchoCell> {
  const { opts, fleet, progress } = ctx;
  const group = `echo-${target.name}`;
  progress.phase(`echo ${target.name}: connecting ${opts.echoClients}`, () => `${fleet.live.open} open`);
  try {
    const conn = await fleet.connect({
      group,
      kind: target.kind,
      mode: "echo",
      urls: target.clientUrls,
      count: opts.echoClients,
      ratePerSec: 0,
      concurrency: 200,
      spreadAfter: opts.spreadAfter,
      reconnect: false,
      idPrefix: `echo-${process.pid}-${Date.now().toString(36)}`,
      timeoutMs: 15_000,
    });
    // A moment for the server to finish with what came before (closing the fan-out's clients).
    await sleep(Math.min(1_000, opts.echoMs / 2));
    progress.phase(`echo ${target.name}: ${opts.echoRate}/s for ${opts.echoMs / 1000}s`, () => `${fleet.live.open} open`);
    const cpu = new CpuMeter(() => ({ ...target.processes(), generator: fleet.pids }));
    cpu.start();
    const t0 = performance.now();
    const r = await fleet.echo(opts.echoRate, opts.echoMs, opts.payloadBytes, group);
    const seconds = (performance.now() - t0) / 1000;
    const cell: EchoCell = {
      target: target.name,
      path: PATHS[target.name] ?? PATHS[target.kind]!,
      clients: opts.echoClients,
      connected: conn.opened,
      ratePerSec: opts.echoRate,
      seconds: Math.round(seconds * 100) / 100,
      sent: r.sent,
      answered: r.answered,
      errors: r.errors,
      rtt: summarize(r.rtt),
      cpu: cpu.stop(),
    };
    progress.log(`  echo ${target.name}: ${cell.answered}/${cell.sent} answered, rtt p50 ${cell.rtt.p50} ms p99 ${cell.rtt.p99} ms`);
    return cell;
  } finally {
    await fleet.closeAll(group);
  }
}
