import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { track } from "../../harness/processes.js";
import { epoch } from "../lib/clock.js";
import { type Histogram, mergeEncoded } from "../lib/hist.js";
import { PendingReplies } from "../lib/replies.js";
import type {
  AddressFloodOrder,
  AddressFloodResult,
  ConnectOrder,
  ConnectResult,
  Delivery,
  DeliveryBucket,
  EchoResult,
  FloodOrder,
  FloodResult,
  Order,
  Report,
  ReplayOrder,
  ReplayResult,
  Stats,
} from "./protocol.js";

const WORKER = fileURLToPath(new URL("./worker.ts", import.meta.url));

interface Child {
  proc: ChildProcess;
  pid: number;
  capacity: number;
  pending: PendingReplies;
  beat: { open: number; frames: number; failed: number; connecting: number };
}

export interface FleetConnect extends Omit<ConnectOrder, "op" | "startIndex" | "count" | "ratePerSec"> {
  count: number;
  /** Total attempts a second over all children; 0 = unpaced. */
  ratePerSec: number;
}

export interface FleetConnectResult {
  opened: number;
  failed: number;
  errors: Record<string, number>;
  connectTimes: Histogram;
  elapsedMs: number;
}

/**
 * The load generator: several child processes, each holding its share of the
 * connections (each under its own descriptor limit), driven together. Every
 * child is tracked for cleanup and exits by itself when this process goes.
 */
export class Fleet {
  readonly children: Child[] = [];
  /** Connection index per group, so source addresses and client ids never repeat within one. */
  readonly #nextIndex = new Map<string, number>();
  /** Called for every `done` a child reports (a broadcast reached all of its clients). */
  onDone: ((seq: number, last: number, child: number) => void) | undefined;

  static async start(count: number): Promise<Fleet> {
    const fleet = new Fleet();
    await Promise.all(Array.from({ length: count }, () => fleet.#spawn()));
    return fleet;
  }

  get pids(): number[] {
    return this.children.map((c) => c.pid);
  }

  /** How many connections the children can hold together. */
  get capacity(): number {
    return this.children.reduce((n, c) => n + c.capacity, 0);
  }

  /** Live figures from the last heartbeats (every 500 ms). */
  get live(): { open: number; frames: number; failed: number; connecting: number } {
    const t = { open: 0, frames: 0, failed: 0, connecting: 0 };
    for (const c of this.children) {
      t.open += c.beat.open;
      t.frames += c.beat.frames;
      t.failed += c.beat.failed;
      t.connecting += c.beat.connecting;
    }
    return t;
  }

  async #spawn(): Promise<void> {
    const proc = fork(WORKER, [], {
      execArgv: ["--import", "tsx"],
      env: { ...process.env, BENCH_EPOCH_MS: String(epoch()) },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    track(proc);
    // IPC to a child that is gone (Ctrl+C reached it first) fails with EPIPE: the pending asks are rejected on exit.
    proc.on("error", () => undefined);
    const child: Child = {
      proc,
      pid: proc.pid ?? -1,
      capacity: 0,
      pending: new PendingReplies(),
      beat: { open: 0, frames: 0, failed: 0, connecting: 0 },
    };
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("generator child did not start within 20 s")), 20_000);
      proc.on("message", (report: Report) => {
        if (report.type === "ready") {
          clearTimeout(timer);
          child.capacity = report.capacity;
          resolve();
        } else if (report.type === "reply") {
          child.pending.settle(report.id, report.error || undefined, report.result);
        } else if (report.type === "done") {
          this.onDone?.(report.seq, report.last, this.children.indexOf(child));
        } else if (report.type === "beat") {
          child.beat = report;
        }
      });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        const err = new Error(`generator child ${child.pid} exited (${code ?? signal})`);
        child.pending.failAll(err);
        reject(err);
      });
    });
    this.children.push(child);
  }

  #ask<T>(child: Child, order: Order, timeoutMs = 120_000): Promise<T> {
    return child.pending.request<T>(
      timeoutMs,
      () => `generator child ${child.pid}: no answer to ${order.op} within ${timeoutMs} ms`,
      (id) => {
        if (!child.proc.connected) throw new Error(`generator child ${child.pid} is gone`);
        child.proc.send({ id, order }, (err) => {
          if (err) child.pending.fail(id, new Error(`generator child ${child.pid}: ${err.message}`));
        });
      },
    );
  }

  #all<T>(order: Order, timeoutMs?: number): Promise<T[]> {
    return Promise.all(this.children.map((c) => this.#ask<T>(c, order, timeoutMs)));
  }

  /**
   * Opens `count` more connections, split over the children by free capacity,
   * paced at `ratePerSec` in total.
   */
  async connect(o: FleetConnect): Promise<FleetConnectResult> {
    const free = this.children.map((c) => c.capacity - c.beat.open - c.beat.connecting);
    const totalFree = free.reduce((a, b) => a + Math.max(0, b), 0);
    if (o.count > totalFree) throw new Error(`asked for ${o.count} more connections; the generator has room for ${totalFree}`);
    // Even split, then move what does not fit to children with room.
    const shares = this.children.map(() => Math.floor(o.count / this.children.length));
    let rest = o.count - shares.reduce((a, b) => a + b, 0);
    for (let i = 0; rest > 0; i = (i + 1) % shares.length) {
      shares[i]!++;
      rest--;
    }
    for (let i = 0; i < shares.length; i++) {
      const over = shares[i]! - Math.max(0, free[i]!);
      if (over <= 0) continue;
      shares[i]! -= over;
      let left = over;
      for (let j = 0; j < shares.length && left > 0; j++) {
        const room = Math.max(0, free[j]!) - shares[j]!;
        const take = Math.min(room, left);
        if (take > 0) {
          shares[j]! += take;
          left -= take;
        }
      }
    }
    const t0 = performance.now();
    const results = await Promise.all(
      this.children.map((c, i) => {
        const count = shares[i]!;
        const startIndex = this.#nextIndex.get(o.group) ?? 0;
        this.#nextIndex.set(o.group, startIndex + count);
        const rate = o.ratePerSec > 0 ? (o.ratePerSec * count) / Math.max(1, o.count) : 0;
        return this.#ask<ConnectResult>(c, { ...o, op: "connect", count, startIndex, ratePerSec: rate }, 300_000);
      }),
    );
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    return {
      opened: results.reduce((n, r) => n + r.opened, 0),
      failed: results.reduce((n, r) => n + r.failed, 0),
      errors,
      connectTimes: mergeEncoded(results.map((r) => r.connectHist)),
      elapsedMs: performance.now() - t0,
    };
  }

  /** Per-client delivery counting from `fromSeq`; `completion`: report each broadcast delivered to a whole group. */
  async track(fromSeq: number, completion: boolean, group?: string): Promise<void> {
    await this.#all({ op: "track", fromSeq, completion, group });
  }

  /** Counters of one group (all when not given), summed over the children. */
  async stats(reset: boolean, group?: string): Promise<{ open: number; perChild: number[]; frames: number; drops: number; latency: Histogram }> {
    const all = await this.#all<Stats>({ op: "stats", reset, group });
    return {
      open: all.reduce((n, s) => n + s.open, 0),
      perChild: all.map((s) => s.open),
      frames: all.reduce((n, s) => n + s.frames, 0),
      drops: all.reduce((n, s) => n + s.drops, 0),
      latency: mergeEncoded(all.map((s) => s.latencyHist)),
    };
  }

  /** Echo requests at `ratePerSec` in total. */
  async echo(
    ratePerSec: number,
    durationMs: number,
    payloadBytes: number,
    group?: string,
  ): Promise<{ sent: number; answered: number; errors: number; rtt: Histogram }> {
    const n = this.children.length;
    const all = await this.#all<EchoResult>({ op: "echo", ratePerSec: ratePerSec / n, durationMs, payloadBytes, group }, durationMs + 30_000);
    return {
      sent: all.reduce((s, r) => s + r.sent, 0),
      answered: all.reduce((s, r) => s + r.answered, 0),
      errors: all.reduce((s, r) => s + r.errors, 0),
      rtt: mergeEncoded(all.map((r) => r.rttHist)),
    };
  }

  async delivery(group?: string): Promise<Omit<Delivery, "reconnectHist"> & { reconnectTimes: Histogram }> {
    const all = await this.#all<Delivery>({ op: "delivery", group });
    const sum = (pick: (d: Delivery) => number) => all.reduce((s, d) => s + pick(d), 0);
    const movedFrom: Record<string, number> = {};
    for (const d of all) for (const [k, v] of Object.entries(d.movedFrom)) movedFrom[k] = (movedFrom[k] ?? 0) + v;
    const defined = (xs: (number | undefined)[]) => xs.filter((x): x is number => x !== undefined);
    const firsts = defined(all.map((d) => d.firstDisconnectUs));
    const lasts = defined(all.map((d) => d.lastReconnectUs));
    const bucket = (pick: (d: Delivery) => DeliveryBucket): DeliveryBucket => {
      const out = { ...pick(all[0]!) };
      for (const k of Object.keys(out) as (keyof DeliveryBucket)[]) out[k] = sum((d) => pick(d)[k]);
      return out;
    };
    const receivedBy: Record<string, number> = {};
    for (const d of all) for (const [k, v] of Object.entries(d.receivedBy)) receivedBy[k] = (receivedBy[k] ?? 0) + v;
    const reconnectErrors: Record<string, number> = {};
    for (const d of all) for (const [k, v] of Object.entries(d.reconnectErrors)) reconnectErrors[k] = (reconnectErrors[k] ?? 0) + v;
    return {
      stayed: bucket((d) => d.stayed),
      moved: bucket((d) => d.moved),
      movedFrom,
      reconnects: sum((d) => d.reconnects),
      reconnectFailures: sum((d) => d.reconnectFailures),
      reconnectErrors,
      reconnectTimes: mergeEncoded(all.map((d) => d.reconnectHist)),
      firstDisconnectUs: firsts.length ? Math.min(...firsts) : undefined,
      lastReconnectUs: lasts.length ? Math.max(...lasts) : undefined,
      open: sum((d) => d.open),
      pendingReconnects: sum((d) => d.pendingReconnects),
      receivedBy,
      receivedByNotOpen: sum((d) => d.receivedByNotOpen),
      closed: sum((d) => d.closed),
    };
  }

  /**
   * An abusive client on the first child (see FloodOrder); resolves when its
   * time is up. Give it a fleet of its own, so that its busy event loop delays
   * no receiver's timestamps.
   */
  async flood(o: Omit<FloodOrder, "op">): Promise<FloodResult> {
    const child = this.children[0];
    if (!child) throw new Error("the fleet has no children");
    return this.#ask<FloodResult>(child, { ...o, op: "flood" }, o.durationMs + o.timeoutMs + 30_000);
  }

  /** The replay attacker on the first child (see ReplayOrder); resolves when its time is up. */
  async replay(o: Omit<ReplayOrder, "op">): Promise<ReplayResult> {
    const child = this.children[0];
    if (!child) throw new Error("the fleet has no children");
    return this.#ask<ReplayResult>(child, { ...o, op: "replay" }, o.durationMs + o.requests * o.timeoutMs * 2 + 30_000);
  }

  /** The address flood on the first child (see AddressFloodOrder); resolves when its time is up. */
  async addressFlood(o: Omit<AddressFloodOrder, "op">): Promise<AddressFloodResult> {
    const child = this.children[0];
    if (!child) throw new Error("the fleet has no children");
    return this.#ask<AddressFloodResult>(child, { ...o, op: "addressFlood" }, o.durationMs + o.timeoutMs + 30_000);
  }

  /** Closes every connection of a group, or all (and stops reconnecting them). */
  async closeAll(group?: string): Promise<void> {
    await this.#all({ op: "close", group }, 30_000);
    if (group === undefined) this.#nextIndex.clear();
    else this.#nextIndex.delete(group);
    if (group === undefined) for (const c of this.children) c.beat = { ...c.beat, open: 0, connecting: 0 };
  }

  /** Closes everything and ends the children (SIGKILL if one does not go). */
  async stop(): Promise<void> {
    await Promise.all(
      this.children.map(async (c) => {
        if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
        const exited = new Promise((r) => c.proc.once("exit", r));
        await this.#ask(c, { op: "exit" }, 10_000).catch(() => undefined);
        const timer = setTimeout(() => c.proc.kill("SIGKILL"), 3_000);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}
