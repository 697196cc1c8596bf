import { expect } from "chai";
import { io } from "socket.io-client";
import type { RedisCluster } from "../harness/redis-cluster.js";
import { poll } from "../harness/waiting.js";
import { useCleanup } from "./helpers/cleanup.js";
import { type Cluster, startClusterOnRedisCluster } from "./helpers/cluster.js";
import { expectAlive } from "./helpers/process.js";
import { compareOffsets, expectEveryNumberOnce, httpBroadcast, NumberedPublisher, ResumingIo, ResumingWs } from "./helpers/recovery.js";

/**
 * The service on a real Redis Cluster (three masters, three replicas, node
 * timeout 1 s): history, recovery, and a master killed while every instance
 * publishes.
 */
describe("Redis Cluster: history, recovery and failover", function () {
  this.timeout(90_000);
  const defer = useCleanup();
  let c: Cluster<RedisCluster>;

  beforeEach(async () => {
    // Publishers send as fast as acks allow: no per-connection rate limit.
    c = await startClusterOnRedisCluster(3, { RATE_LIMIT_MESSAGES_PER_SEC: "0" });
    defer(() => c.stop());
  });

  const ws = (i: number) => c.instances[i]!.url.replace(/^http/, "ws");

  it("keeps the history on the cluster: a client that reconnects elsewhere gets what it missed, recovered", async () => {
    const client = new ResumingIo(c.instances[0]!.url);
    defer(() => client.close());
    const first = await client.connect();
    expect(first.offset).to.match(/^\d+-\d+$/);
    await httpBroadcast(c.instances[1]!.url, "n:1");
    await client.message("n:1");
    client.close();
    for (let n = 2; n <= 6; n++) await httpBroadcast(c.instances[2]!.url, `n:${n}`);
    client.moveTo(c.instances[1]!.url);
    const again = await client.connect();
    expect(again).to.include({ recovered: true, replayed: 5, epoch: first.epoch });
    await client.message("n:6");
    expectEveryNumberOnce(client, 6, "the recovered client");
  });

  it("answers cluster queries in full again after the master of the adapter's channel fails over, and keeps ids unique", async () => {
    const clients = await Promise.all(
      c.instances.map(async (inst, i) => {
        const client = new ResumingIo(inst.url, { clientId: `q${i}` });
        defer(() => client.close());
        await client.connect();
        return client;
      }),
    );
    const master = await c.redis.masterFor("wbs#/#"); // the sharded adapter's channel for namespace "/"
    await c.redis.kill(master.port);
    await c.redis.waitHealthy();
    // Within the failover queries may be partial; afterwards they are whole again, without restarting anything.
    const list = await poll(
      async () => {
        const body = (await (await fetch(`${c.instances[0]!.url}/clients`)).json()) as { clients: string[]; partial: boolean };
        return !body.partial && body.clients.length === 3 && body;
      },
      { timeoutMs: 20_000, what: "GET /clients answered in full after the failover" },
    );
    expect([...list.clients].sort()).to.deep.equal(["q0", "q1", "q2"]);
    const refused = new ResumingIo(c.instances[2]!.url, { clientId: "q0" });
    defer(() => refused.close());
    const err = (await refused.connect().then(
      () => undefined,
      (e: Error & { data?: { code: string } }) => e,
    )) as (Error & { data?: { code: string } }) | undefined;
    expect(err?.data?.code, "q0 taken twice after the failover").to.equal("DUPLICATE_CLIENT_ID");
    await httpBroadcast(c.instances[1]!.url, "n:1");
    for (const client of clients) await client.message("n:1");
  });

  it("survives a master killed while every instance publishes: its replica takes over, nothing is lost, every client sees one order", async () => {
    const receivers = [0, 1, 2].flatMap((i) => [new ResumingIo(c.instances[i]!.url), new ResumingWs()]);
    const arrivals = receivers.map(() => [] as number[]);
    for (const [k, r] of receivers.entries()) {
      defer(() => r.close());
      if (r instanceof ResumingIo) {
        r.socket.onAny(() => arrivals[k]!.push(Date.now()));
        await r.connect();
      } else {
        await r.connect(ws(k >> 1));
        r.ws!.on("message", () => arrivals[k]!.push(Date.now()));
      }
    }
    const prefixes = ["a:", "b:", "c:"];
    const publishers = c.instances.map((inst, i) => {
      const socket = io(inst.url, { transports: ["websocket"], forceNew: true, reconnection: false });
      defer(() => socket.close());
      const p = new NumberedPublisher(socket, prefixes[i]);
      p.start();
      return p;
    });
    await Promise.all(publishers.map((p) => p.more(20)));

    const master = await c.redis.masterFor("wbs:{history}");
    const pids = c.instances.map((i) => i.pid);
    const killedAt = Date.now();
    await c.redis.kill(master.port);
    await Promise.all(publishers.map((p) => p.more(60, 30_000)));
    const last = await Promise.all(publishers.map((p) => p.stop()));

    // Delivery resumed without restarting anything: every receiver gets every publisher's last message.
    for (const r of receivers) await Promise.all(prefixes.map((prefix, i) => r.message(`${prefix}${last[i]}`, 30_000)));
    await c.redis.waitHealthy();
    expect(c.instances.map((i) => i.pid)).to.deep.equal(pids);
    for (const inst of c.instances) await expectAlive(inst, "after the failover");

    for (const [k, r] of receivers.entries()) {
      // Each publisher's messages, all of them, once each, in the order it sent them.
      for (const [i, prefix] of prefixes.entries()) {
        expectEveryNumberOnce({ numbers: () => r.numbers(prefix), timeline: () => r.timeline(prefix) }, last[i]!, `receiver ${k}, ${prefix}`);
      }
      // The history's order: increasing offsets, the same sequence everywhere.
      const offsets = r.inbox.items.filter((e) => e.event === "message").map((e) => e.data.offset as string);
      for (let j = 1; j < offsets.length; j++) expect(compareOffsets(offsets[j - 1]!, offsets[j]!), `receiver ${k} offsets`).to.equal(-1);
      const reference = receivers[0]!.inbox.items.filter((e) => e.event === "message").map((e) => e.data.offset as string);
      expect(offsets, `receiver ${k} saw another order than receiver 0`).to.deep.equal(reference);
    }

    // The figure for the closing note: the longest a receiver went without a delivery around the kill.
    const gaps = arrivals.map((times) => {
      const around = times.filter((t) => t >= killedAt - 1_000);
      return Math.max(0, ...around.slice(1).map((t, j) => t - around[j]!));
    });
    const messages = last.reduce((a, b) => a + b, 0);
    console.log(
      `      failover of the history's master (port ${master.port}): longest pause in delivery ${Math.max(...gaps)} ms ` +
        `(per receiver: ${gaps.join(", ")} ms); ${messages} messages published, each received by all ${receivers.length} receivers, 0 missed`,
    );
  });
});
