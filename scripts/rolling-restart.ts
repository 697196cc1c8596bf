import { parseArgs } from "node:util";
import { measureUnderLoad } from "../harness/rolling-restart.js";
import { startStack } from "../harness/stack.js";

// Prints the figures of a rolling restart of all four instances under load:
//   node --import tsx scripts/rolling-restart.ts [--clients 200] [--forced-after 2]

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "200" },
    "forced-after": { type: "string", default: "2" },
    "publish-every-ms": { type: "string", default: "20" },
  },
});

const stack = await startStack({
  env: { FORCED_SHUTDOWN_AFTER_SEC: values["forced-after"], PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "warn" },
});
let exitCode = 0;
try {
  console.log(`stack up: ${stack.url}; clients=${values.clients}, FORCED_SHUTDOWN_AFTER_SEC=${values["forced-after"]}`);
  const report = await measureUnderLoad(
    stack,
    async () => {
      for (let i = 0; i < stack.instances.length; i++) {
        const t0 = Date.now();
        await stack.restartInstance(i);
        console.log(`ws${i + 1} replaced in ${Date.now() - t0} ms`);
      }
    },
    { clients: Number(values.clients), publishEveryMs: Number(values["publish-every-ms"]), log: (l) => console.log(l) },
  );
  console.log(JSON.stringify(report, null, 2));
  console.log(
    [
      `connection attempts ${report.connectionAttempts}, failures ${report.connectionFailures}`,
      `published ${report.published} (publish failures ${report.publishFailures})`,
      `received ${report.received}; owed to connected clients ${report.expected}, missed ${report.missed}, duplicates ${report.duplicates}, out of order ${report.outOfOrder}`,
      `clients cut ${report.cuts}; reconnected p50 ${report.reconnectMs.p50} ms, max ${report.reconnectMs.max} ms; not back ${report.notReconnected}`,
    ].join("\n"),
  );
  if (report.connectionFailures > 0 || report.missed > 0 || report.duplicates > 0 || report.notReconnected > 0) exitCode = 1;
} finally {
  await stack.stop({ graceMs: 5_000 });
}
process.exit(exitCode);
