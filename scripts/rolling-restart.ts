import { parseArgs } from "node:util";
import { describeReport, killAndReplace, measureUnderLoad } from "../harness/rolling-restart.js";
import { startStack } from "../harness/stack.js";
import { sleep } from "../harness/timeouts.js";

// Prints the figures of a rolling restart of all four instances under load:
//   node --import tsx scripts/rolling-restart.ts [--clients 200] [--forced-after 2] [--kill]
// --kill: each instance is SIGKILLed (no drain) and replaced, one after the other.
// Any other service variable passes through from the environment (HISTORY_SIZE, DRAIN_CLOSE_SPREAD_SEC, …).

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "200" },
    "forced-after": { type: "string", default: "2" },
    "publish-every-ms": { type: "string", default: "20" },
    kill: { type: "boolean", default: false },
  },
});
const kill = values.kill;

const stack = await startStack({
  env: { FORCED_SHUTDOWN_AFTER_SEC: values["forced-after"], PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "warn" },
  onEvent: (e) => {
    if (e.type === "instance-exited" && !e.expected && !kill) console.log(`ws${e.index + 1} exited unexpectedly: ${JSON.stringify(e.exit)}`);
  },
});
let exitCode = 0;
try {
  console.log(
    `stack up: ${stack.url}; clients=${values.clients}, ${kill ? "each instance SIGKILLed and replaced" : `each instance drained and replaced, FORCED_SHUTDOWN_AFTER_SEC=${values["forced-after"]}`}`,
  );
  const report = await measureUnderLoad(
    stack,
    async () => {
      for (let i = 0; i < stack.instances.length; i++) {
        const t0 = Date.now();
        if (kill) {
          // Mid-run: the clients of the last one have settled and broadcasts flow.
          await sleep(1_000);
          await killAndReplace(stack, i);
        } else {
          await stack.restartInstance(i);
        }
        console.log(`ws${i + 1} ${kill ? "killed" : "drained"} and replaced in ${Date.now() - t0} ms`);
      }
    },
    { clients: Number(values.clients), publishEveryMs: Number(values["publish-every-ms"]), log: (l) => console.log(l) },
  );
  console.log(JSON.stringify(report, null, 2));
  console.log(describeReport(report).join("\n"));
  // A SIGKILL fails the handshakes in flight on the instance (retried): only a drain must fail none.
  if (
    (!kill && report.connectionFailures > 0) ||
    report.missed > 0 ||
    report.duplicates > 0 ||
    report.outOfOrder > 0 ||
    report.all.notRecovered > 0 ||
    report.notReconnected > 0
  ) {
    exitCode = 1;
  }
} finally {
  await stack.stop({ graceMs: 5_000 });
}
process.exit(exitCode);
