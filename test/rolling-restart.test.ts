import { expect } from "chai";
import { measureUnderLoad } from "../harness/rolling-restart.js";
import { type Stack, startStack } from "../harness/stack.js";

describe("rolling restart of all four instances through nginx, under load", function () {
  this.timeout(120_000);
  let stack: Stack | undefined;
  after(async function () {
    this.timeout(60_000);
    await stack?.stop({ graceMs: 5_000 });
  });

  it("fails no connection attempt, reconnects the cut ones within seconds, and they recover: nothing missed, nothing twice, in order", async () => {
    stack = await startStack({ env: { FORCED_SHUTDOWN_AFTER_SEC: "0.5", PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "warn" } });
    const s = stack;
    const oldPids = s.instances.map((i) => i.pid);
    const report = await measureUnderLoad(s, () => s.rollingRestart(), { clients: 40, publishEveryMs: 20 });
    console.log(`      ${JSON.stringify(report)}`);
    // Every instance was replaced.
    for (const [i, inst] of s.instances.entries()) expect(inst.pid).to.not.equal(oldPids[i]);
    expect(report.connectionFailures, report.failureSamples.join("; ")).to.equal(0);
    expect(report.published).to.be.greaterThan(50);
    expect(report.publishFailures).to.equal(0);
    expect(report.expected).to.be.greaterThan(report.published);
    // Across the reconnects too: every client resumes where it was (offset and epoch).
    const anomalies = report.anomalySamples.join("; ");
    expect(report.missed).to.equal(0);
    expect(report.duplicates, anomalies).to.equal(0);
    expect(report.outOfOrder, anomalies).to.equal(0);
    // Each instance held clients when it was drained, and the deadline cut them.
    expect(report.cuts).to.be.at.least(report.clients);
    expect(report.notReconnected).to.equal(0);
    expect(report.reconnectMs.max).to.be.lessThan(5_000);
    // Every client was moved, on every transport, and each reconnect was told it recovered.
    expect(report.moved.clients).to.equal(report.clients);
    for (const by of Object.values(report.movedBy)) expect(by.clients).to.be.greaterThan(0);
    expect(report.moved.resumes).to.be.at.least(report.clients);
    expect(report.moved.recovered).to.equal(report.moved.resumes);
    expect(report.moved.notRecovered).to.equal(0);
  });
});
