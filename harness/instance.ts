import { fileURLToPath } from "node:url";
import { type Exit, spawnChild, stopChild } from "./child.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** One JSON log record of an instance. */
export type LogRecord = { level: string; msg: string; instance: string; [k: string]: unknown };

export interface InstanceProcess {
  readonly id: string;
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  readonly logs: LogRecord[];
  /** Lines that were not JSON (stderr, crashes). */
  readonly otherOutput: string[];
  readonly exited: Promise<Exit>;
  /** Resolves with the first record (already logged or still to come) that matches. */
  waitForLog(match: (r: LogRecord) => boolean, timeoutMs?: number): Promise<LogRecord>;
  signal(name: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<Exit>;
}

/**
 * Starts `server/main.ts` as a real process with `env` on top of ours, and
 * resolves once it is listening (its "listening" line, or /healthz answering). PORT must be a real port (not 0) so the
 * caller knows where it is.
 */
export async function startInstance(opts: {
  env: Record<string, string | undefined>;
  waitForListening?: boolean;
  /** "source" (default): server/main.ts through tsx; "dist": the compiled build (`npm run build` first). */
  build?: "source" | "dist";
}): Promise<InstanceProcess> {
  // JSON lines always: they are parsed here (the stack prettifies them itself).
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: "info", ...opts.env, LOG_FORMAT: "json" };
  const port = Number(env.PORT);
  const host = env.HOST ?? "127.0.0.1";
  const logs: LogRecord[] = [];
  const otherOutput: string[] = [];
  const waiters = new Set<{ match: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }>();
  const args = opts.build === "dist" ? ["dist/server/main.js"] : ["--import", "tsx", "server/main.ts"];
  const child = spawnChild(process.execPath, args, {
    cwd: ROOT,
    env,
    onLine(line) {
      let record: LogRecord;
      try {
        record = JSON.parse(line) as LogRecord;
      } catch {
        otherOutput.push(line);
        return;
      }
      logs.push(record);
      for (const w of waiters) {
        if (w.match(record)) {
          waiters.delete(w);
          w.resolve(record);
        }
      }
    },
  });

  const waitForLog = (match: (r: LogRecord) => boolean, timeoutMs = 10_000): Promise<LogRecord> => {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = {
        match,
        resolve: (r: LogRecord) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`no matching log line within ${timeoutMs} ms; last lines:\n${[...logs.slice(-5).map((l) => JSON.stringify(l)), ...otherOutput.slice(-5)].join("\n")}`));
      }, timeoutMs);
      waiters.add(w);
      child.exited.then(() => {
        if (!waiters.has(w)) return;
        waiters.delete(w);
        clearTimeout(timer);
        reject(new Error(`instance exited before logging the expected line; output:\n${[...logs.slice(-5).map((l) => JSON.stringify(l)), ...otherOutput.slice(-10)].join("\n")}`));
      });
    });
  };

  const instance: InstanceProcess = {
    id: env.INSTANCE_ID ?? `?:${port}`,
    port,
    url: `http://${host}:${port}`,
    pid: child.proc.pid ?? -1,
    logs,
    otherOutput,
    exited: child.exited,
    waitForLog,
    signal: (name) => void child.proc.kill(name),
    stop: (graceMs) => stopChild(child.proc, child.exited, graceMs),
  };
  if (opts.waitForListening !== false) {
    try {
      // The "listening" line, or (when LOG_LEVEL hides it) /healthz answering.
      let up = false;
      const polled = (async () => {
        while (!up && child.proc.exitCode === null) {
          const ok = await fetch(`${instance.url}/healthz`, { signal: AbortSignal.timeout(500) }).then((r) => r.ok, () => false);
          if (ok) return;
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise(() => undefined); // the log wait decides
      })();
      await Promise.race([waitForLog((r) => r.msg === "listening", 30_000), polled]).finally(() => (up = true));
    } catch (err) {
      await instance.stop(500);
      throw err;
    }
  }
  return instance;
}
