import { rssBytes } from "../../harness/procfs.js";
import { sleep } from "../../harness/timeouts.js";
import { type HeapRow, heapDiff } from "../lib/heap-owners.js";
import { Inspector } from "../lib/inspector.js";
import { MachineMeter, type MachineReading } from "../lib/machine.js";
import type { Target, TargetName } from "../targets.js";
import type { Ctx } from "./context.js";

export interface MemoryCell {
  target: TargetName;
  transport: string;
  clients: number;
  connected: number;
  settleMs: number;
  rssBefore: number;
  rssAfter: number;
  heapBefore: number;
  heapAfter: number;
  externalBefore: number;
  externalAfter: number;
  /** Bytes per idle connection (this round's: the first). */
  rssPerConnection: number;
  heapPerConnection: number;
  externalPerConnection: number;
  /** Every round, the first (on the run's fresh process) included; later ones on processes of their own. */
  rounds: MemoryRound[];
  /** What the heap grew by, per connection, by constructor and owner (from two heap snapshots). */
  heapGrowth?: { clients: number; rows: HeapRow[]; byOwner: { owner: string; bytesPerConnection: number }[] };
}

export interface MemoryRound {
  connected: number;
  rssPerConnection: number;
  heapPerConnection: number;
  externalPerConnection: number;
  machine: MachineReading;
}

const TRANSPORT: Record<string, string> = { raw: "bare ws", "sio-stock": "stock Socket.IO", "ws-1": "/ws", "sio-1": "Socket.IO" };

/**
 * Memory per idle connection: forced full GC (over the inspector: the server
 * has no GC endpoint), RSS (/proc VmRSS) and heap (process.memoryUsage())
 * before and after `memoryClients` idle connections and a settle period.
 */
export async function runMemory(ctx: Ctx, target: Target, o: { heapDiff: boolean } = { heapDiff: true }): Promise<MemoryCell> {
  const { opts, fleet, progress } = ctx;
  const [insp] = target.inspectors();
  const pid = Object.values(target.processes())[0]?.[0];
  if (!insp || pid === undefined) throw new Error(`${target.name}: no inspector (start it with inspect)`);
  const inspector = await Inspector.connect(insp.url);
  /** `count` idle clients in the fleet group `<kind>-<target>`, connected as fast as they go. */
  const connectIdle = (kind: "memory" | "heap", count: number) =>
    fleet.connect({
      group: `${kind}-${target.name}`,
      kind: target.kind,
      mode: "idle",
      urls: target.clientUrls,
      count,
      ratePerSec: 0,
      concurrency: 200,
      spreadAfter: opts.spreadAfter,
      reconnect: false,
      idPrefix: kind === "memory" ? "idle" : "heap",
      timeoutMs: 15_000,
    });
  try {
    progress.phase(`memory ${target.name}: baseline after GC`);
    const machine = new MachineMeter().start();
    await inspector.collectGarbage();
    await sleep(200);
    const m0 = await inspector.memoryUsage();
    const rss0 = rssBytes(pid) ?? NaN;
    progress.phase(`memory ${target.name}: ${opts.memoryClients} idle clients`, () => `${fleet.live.open} open, ${fleet.live.failed} failed`);
    const conn = await connectIdle("memory", opts.memoryClients);
    progress.phase(`memory ${target.name}: settling ${opts.memorySettleMs} ms, then GC`, () => `${fleet.live.open} open`);
    await sleep(opts.memorySettleMs);
    await inspector.collectGarbage();
    await sleep(200);
    const m1 = await inspector.memoryUsage();
    const rss1 = rssBytes(pid) ?? NaN;
    const n = Math.max(1, conn.opened);
    const round: MemoryRound = {
      connected: conn.opened,
      rssPerConnection: Math.round((rss1 - rss0) / n),
      heapPerConnection: Math.round((m1.heapUsed - m0.heapUsed) / n),
      externalPerConnection: Math.round((m1.external - m0.external) / n),
      machine: machine.stop(),
    };
    const cell: MemoryCell = {
      target: target.name,
      transport: TRANSPORT[target.name] ?? target.name,
      clients: opts.memoryClients,
      connected: conn.opened,
      settleMs: opts.memorySettleMs,
      rssBefore: rss0,
      rssAfter: rss1,
      heapBefore: m0.heapUsed,
      heapAfter: m1.heapUsed,
      externalBefore: m0.external,
      externalAfter: m1.external,
      rssPerConnection: round.rssPerConnection,
      heapPerConnection: round.heapPerConnection,
      externalPerConnection: round.externalPerConnection,
      rounds: [round],
    };
    progress.log(
      `  memory ${target.name}: ${(cell.rssPerConnection / 1024).toFixed(1)} KiB RSS, ${(cell.heapPerConnection / 1024).toFixed(1)} KiB heap per idle connection (${conn.opened} connected)`,
    );
    await fleet.closeAll(`memory-${target.name}`);
    if (opts.heapDiff > 0 && o.heapDiff) {
      progress.phase(`memory ${target.name}: heap snapshots around ${opts.heapDiff} idle clients`, () => `${fleet.live.open} open`);
      // Let the server finish closing the clients above before the first snapshot.
      await sleep(1_500);
      await inspector.collectGarbage();
      const before = await inspector.heapByConstructor();
      const r = await connectIdle("heap", opts.heapDiff);
      await sleep(Math.min(opts.memorySettleMs, 1_000));
      const after = await inspector.heapByConstructor();
      cell.heapGrowth = { clients: r.opened, ...heapDiff(before, after, Math.max(1, r.opened)) };
    }
    return cell;
  } finally {
    inspector.close();
    await fleet.closeAll(`memory-${target.name}`);
    await fleet.closeAll(`heap-${target.name}`);
  }
}
