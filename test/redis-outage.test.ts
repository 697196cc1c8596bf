import { expect } from "chai";
import type { InstanceProcess, LogRecord } from "../harness/instance.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectWs } from "./helpers/clients.js";
import { startCluster } from "./helpers/cluster.js";
import { metric, readMetrics } from "./helpers/metrics.js";

const ws = (url: string) => url.replace(/^http/, "ws");

/** The first record logged at or after index `from` that matches. */
const logAfter = (
  inst: InstanceProcess,
  from: number,
  match: (r: LogRecord) => boolean,
  timeoutMs = 10_000,
  what = "a matching log line",
): Promise<LogRecord> =>
  inst
    .waitForLog((r) => inst.logs.indexOf(r) >= from && match(r), timeoutMs)
    .catch((err: Error) => {
      throw new Error(`waiting for ${what}: ${err.message}`);
    });

/** Warnings about skipped cross-instance publishes, however worded (the old one said "delivered to this instance's clients only"). */
const aboutSkippedPublishes = (r: LogRecord) => r.level === "warn" && /publish|redis away|this instance's clients only/i.test(r.msg);

describe("Redis outage: skipped cross-instance publishes", function () {
  this.timeout(45_000);
  const defer = useCleanup();

  it("logs one warning an outage (not one a message), counts every skipped publish, and says when publishing resumes", async () => {
    // Fifty messages at once from one connection: no rate limit here.
    const c = await startCluster(1, { RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    defer(() => c.stop());
    const inst = c.instances[0]!;
    const line = await connectWs(`${ws(inst.url)}/ws`);
    defer(() => line.close());
    const id = /as (\S+) at/.exec(await line.next())![1]!;
    const said = (text: string) => `User ${id} (via ws1) says: ${text}`;

    /** Stops Redis, sends `n` messages while it is away (each still reaches this instance's clients); answers the log index before them. */
    const outage = async (label: string, n: number): Promise<number> => {
      const before = inst.logs.length;
      await c.redis.stop();
      await logAfter(inst, before, (r) => r.msg.startsWith("redis unreachable"));
      const mark = inst.logs.length;
      for (let i = 0; i < n; i++) line.ws.send(`${label} ${i}`);
      await line.next((l) => l === said(`${label} ${n - 1}`), 10_000);
      expect(
        line.inbox.all((l) => l.startsWith(said(`${label} `))),
        "delivered locally during the outage",
      ).to.have.length(n);
      return mark;
    };
    /** Starts Redis again and waits until both connections are back and one message went through the cluster path. */
    const recover = async (label: string): Promise<number> => {
      const before = inst.logs.length;
      await c.redis.restart();
      await Promise.all(["pub", "sub"].map((role) => logAfter(inst, before, (r) => r.msg.startsWith("redis is back") && r.role === role, 15_000)));
      // A publish after the return (an implementation may notice the return on the next publish).
      line.ws.send(`${label} back`);
      await line.next((l) => l === said(`${label} back`));
      return before;
    };

    const sample = (rs: LogRecord[]) => `${rs.length} warning(s)${rs.length > 0 ? `, the first: ${JSON.stringify(rs[0]!.msg)}` : ""}`;
    /** The records logged from index `from` up to `last` (excluded). */
    const until = (from: number, last: LogRecord) => inst.logs.slice(from, inst.logs.indexOf(last));
    const resumeLine = (from: number) =>
      logAfter(inst, from, (r) => r.level === "info" && /publishes resume/.test(r.msg), 10_000, 'the info line "... publishes resume"');

    const first = await outage("first", 50);
    // Log lines travel on stdout, the frames on a socket: here the lines may
    // still trail (an undercount), which is enough to catch a line a message.
    const early = inst.logs.slice(first).filter(aboutSkippedPublishes);
    expect(early.length, `warnings about skipped publishes for 50 messages: ${sample(early)}`).to.be.at.most(2);
    expect(metric(await readMetrics(inst.url), "wbs_cluster_publishes_skipped_total"), "wbs_cluster_publishes_skipped_total").to.be.at.least(50);

    const resumed = await resumeLine(await recover("first"));
    expect(resumed.skipped, JSON.stringify(resumed)).to.be.a("number").and.at.least(50);
    // Everything the outage logged came before the line that ends it.
    const during = until(first, resumed);
    expect(
      during.filter(aboutSkippedPublishes).length,
      `warnings about skipped publishes for 50 messages: ${sample(during.filter(aboutSkippedPublishes))}`,
    ).to.be.at.most(2);
    expect(
      during.filter((r) => /publishes skipped/.test(r.msg)),
      "the outage's warning",
    ).to.have.length.within(1, 2);
    expect(during.filter((r) => r.level === "warn" || r.level === "error").length, "warnings and errors during the outage").to.be.below(10);

    // A second outage is a new one: warned about once more.
    const afterFirst = inst.logs.indexOf(resumed);
    const second = await outage("second", 5);
    expect(inst.logs.slice(afterFirst, second).filter(aboutSkippedPublishes), "no skipped-publish warning between the outages").to.deep.equal([]);
    expect(metric(await readMetrics(inst.url), "wbs_cluster_publishes_skipped_total")).to.be.at.least(55);
    const resumedAgain = await resumeLine(await recover("second"));
    expect(resumedAgain.skipped, JSON.stringify(resumedAgain)).to.be.at.least(5);
    const again = until(second, resumedAgain).filter(aboutSkippedPublishes);
    expect(
      again.filter((r) => /publishes skipped/.test(r.msg)),
      `second outage: ${sample(again)}`,
    ).to.have.length(1);
    expect(again).to.have.length(1);
    expect(inst.otherOutput.join("\n")).not.to.match(/Error|unhandled/i);
  });
});
