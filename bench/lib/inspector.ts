import WebSocket from "ws";
import { aggregateByOwner, type HeapGroup } from "./heap-owners.js";
import { PendingReplies } from "./replies.js";

/**
 * A minimal Chrome DevTools Protocol client for a process started with
 * `--inspect=127.0.0.1:0`: a forced GC (HeapProfiler.collectGarbage) and
 * `process.memoryUsage()` without any endpoint in the server, and a CPU
 * profile of just one phase (Profiler.start/stop).
 */
export class Inspector {
  readonly #ws: WebSocket;
  readonly #pending = new PendingReplies();
  readonly #listeners = new Map<string, (params: unknown) => void>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on("message", (data: Buffer) => {
      const msg = JSON.parse(data.toString()) as { id?: number; method?: string; params?: unknown; result?: unknown; error?: { message: string } };
      if (msg.id === undefined) {
        if (msg.method) this.#listeners.get(msg.method)?.(msg.params);
        return;
      }
      this.#pending.settle(msg.id, msg.error?.message, msg.result);
    });
    ws.on("close", () => this.#pending.failAll(new Error("inspector closed")));
  }

  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1024 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new Inspector(ws);
  }

  send<T = unknown>(method: string, params: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    return this.#pending.request<T>(
      timeoutMs,
      () => `inspector: ${method} took over ${timeoutMs} ms`,
      (id) => this.#ws.send(JSON.stringify({ id, method, params })),
    );
  }

  /** Full GCs until the heap stops shrinking (at most 4). */
  async collectGarbage(): Promise<void> {
    let last = Infinity;
    for (let i = 0; i < 4; i++) {
      await this.send("HeapProfiler.collectGarbage");
      const used = (await this.memoryUsage()).heapUsed;
      if (used >= last * 0.995) break;
      last = used;
    }
  }

  async memoryUsage(): Promise<NodeJS.MemoryUsage> {
    const r = await this.send<{ result: { value: string } }>("Runtime.evaluate", {
      expression: "JSON.stringify(process.memoryUsage())",
      returnByValue: true,
    });
    return JSON.parse(r.result.value) as NodeJS.MemoryUsage;
  }

  /**
   * A heap snapshot (V8 takes it after a full GC), reduced to self size and
   * count by constructor/kind and owner (heap-owners.ts), so two can be
   * compared without keeping either.
   */
  async heapByConstructor(): Promise<Map<string, HeapGroup>> {
    const chunks: string[] = [];
    this.#listeners.set("HeapProfiler.addHeapSnapshotChunk", (p) => chunks.push((p as { chunk: string }).chunk));
    try {
      await this.send("HeapProfiler.takeHeapSnapshot", { reportProgress: false }, 300_000);
    } finally {
      this.#listeners.delete("HeapProfiler.addHeapSnapshotChunk");
    }
    return aggregateByOwner(JSON.parse(chunks.join("")));
  }

  async startProfile(samplingIntervalUs = 500): Promise<void> {
    await this.send("Profiler.enable");
    await this.send("Profiler.setSamplingInterval", { interval: samplingIntervalUs });
    await this.send("Profiler.start");
  }

  async stopProfile(): Promise<CpuProfile> {
    const r = await this.send<{ profile: CpuProfile }>("Profiler.stop");
    await this.send("Profiler.disable");
    return r.profile;
  }

  close(): void {
    this.#ws.close();
  }
}

/** The `.cpuprofile` format (what --cpu-prof writes and Profiler.stop answers). */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number }; hitCount?: number; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** The ws:// URL from a "Debugger listening on ws://…" line, if the process printed one. */
export function inspectorUrlFrom(lines: readonly string[]): string | undefined {
  for (const line of lines) {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

/** Forced full GC in each process (by inspector URL), one after the other; false when there are none. */
export async function collectGarbageIn(inspectors: { url: string }[]): Promise<boolean> {
  for (const { url } of inspectors) {
    const insp = await Inspector.connect(url);
    try {
      await insp.collectGarbage();
    } finally {
      insp.close();
    }
  }
  return inspectors.length > 0;
}
