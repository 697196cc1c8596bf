import type { InstanceProcess } from "../../harness/instance.js";

/** Whether the process has exited already (its exit promise settled). */
export function hasExited(inst: InstanceProcess): Promise<boolean> {
  // A timer fires only after every pending promise reaction, so a settled
  // `exited` always wins this race.
  return Promise.race([inst.exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 0))]);
}

/** Its last output, for failure messages (a crash's stack trace is in otherOutput). */
export const lastOutput = (inst: InstanceProcess, n = 15): string =>
  [...inst.logs.slice(-5).map((r) => JSON.stringify(r)), ...inst.otherOutput.slice(-n)].join("\n");

/**
 * Fails unless the instance is still running and its own /healthz answers 200
 * (another process on the port does not count).
 */
export async function expectAlive(inst: InstanceProcess, context = ""): Promise<void> {
  const where = context ? ` (after ${context})` : "";
  if (await hasExited(inst)) {
    await new Promise((r) => setTimeout(r, 100)); // its last words may still be in the pipe
    throw new Error(`instance ${inst.id} exited${where}: ${JSON.stringify(await inst.exited)}\n${lastOutput(inst)}`);
  }
  let status: number | string;
  let body: { instance?: unknown } = {};
  try {
    const res = await fetch(`${inst.url}/healthz`, { signal: AbortSignal.timeout(3_000) });
    status = res.status;
    body = (await res.json().catch(() => ({}))) as { instance?: unknown };
  } catch (err) {
    status = (err as Error).message;
  }
  if (status !== 200 || body.instance !== inst.id) {
    const exited = await hasExited(inst);
    throw new Error(
      `instance ${inst.id}${where}: GET /healthz answered ${status} ${JSON.stringify(body)}${exited ? ", and it has exited" : ""}\n${lastOutput(inst)}`,
    );
  }
}
