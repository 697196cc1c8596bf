import { readFile } from "node:fs/promises";
import { expect } from "chai";
import type WebSocket from "ws";
import { NGINX_CONF, renderNginxConf } from "../harness/nginx.js";
import { type Stack, startStack } from "../harness/stack.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectWs, type WsClient } from "./helpers/clients.js";
import { pollingHandshake, pollingReceive, pollingSend, upgradeSession } from "./helpers/engine-io.js";
import { httpRequest } from "./helpers/http-request.js";

/**
 * nginx's per-address limits (limit_conn on everything proxied, limit_req on
 * new sessions), with small numbers substituted into the shipped nginx.conf.
 * Each test speaks from a source address of its own (127.0.0.2, .3, .4 all
 * reach 127.0.0.1 on Linux), so their counters never meet; 127.0.0.1 is exempt.
 */
const LIMITS = { connPerAddress: 20, sessionsPerSec: 2, burst: 5 } as const;
/** With `nodelay`, an instant burst passes the first request plus `burst` more. */
const INSTANT = LIMITS.burst + 1;

describe("nginx per-address limits (limit_conn, limit_req on new sessions)", function () {
  this.timeout(30_000);
  const defer = useCleanup();
  let stack: Stack;
  let wsBase: string;

  before(async function () {
    this.timeout(60_000);
    stack = await startStack({ env: { PERIODIC_INTERVAL_SEC: "0", FORCED_SHUTDOWN_AFTER_SEC: "5" }, nginxLimits: LIMITS });
    wsBase = stack.url.replace(/^http/, "ws");
  });
  after(async function () {
    this.timeout(30_000);
    await stack?.stop({ graceMs: 5_000 });
  });

  /** Engine.IO sessions opened by a test are closed after it (a close packet is a request of the session: never limited). */
  const sessions = (): string[] => {
    const sids: string[] = [];
    defer(() => Promise.all(sids.map((sid) => pollingSend(stack.url, sid, "1").catch(() => undefined))));
    return sids;
  };
  const openWs = async (path: string, localAddress?: string): Promise<WsClient> => {
    const c = await connectWs(`${wsBase}${path}`, localAddress ? { localAddress } : {});
    defer(() => c.close());
    return c;
  };
  /** The upgrade's HTTP status: 101 when it opened (and is held until the test ends), else nginx's answer. */
  const tryWs = async (path: string, localAddress: string): Promise<number> => {
    try {
      await openWs(path, localAddress);
      return 101;
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status === undefined) throw err;
      return status;
    }
  };

  it("answers a burst of new Engine.IO sessions from one address with some 200s, then 429; never limits requests of open sessions, nor 127.0.0.1", async () => {
    const from = "127.0.0.2";
    const sids = sessions();
    const started = performance.now();
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const h = await pollingHandshake(stack.url, { localAddress: from });
      statuses.push(h.status);
      if (h.sid) {
        expect(h.sid).to.match(/^ws[1-4]\./);
        sids.push(h.sid);
      }
    }
    const elapsedSec = (performance.now() - started) / 1000;
    const passed = statuses.filter((s) => s === 200).length;
    console.log(`      30 handshakes from ${from} in ${elapsedSec.toFixed(2)} s: ${passed} x 200, ${statuses.filter((s) => s === 429).length} x 429`);
    expect(
      statuses.every((s) => s === 200 || s === 429),
      JSON.stringify(statuses),
    ).to.equal(true);
    expect(statuses.slice(0, INSTANT)).to.deep.equal(Array(INSTANT).fill(200));
    expect(passed).to.be.at.most(INSTANT + Math.ceil(LIMITS.sessionsPerSec * elapsedSec) + 1);
    expect(statuses.filter((s) => s === 429).length).to.be.greaterThan(0);

    // From the same address, at once and far over the rate: every request of an open session passes.
    for (const sid of sids) expect((await pollingSend(stack.url, sid, "40", { localAddress: from })).status, `connect ${sid}`).to.equal(200);
    for (let i = 0; i < 30; i++) {
      const sid = sids[i % sids.length]!;
      const res = await pollingSend(stack.url, sid, `42${JSON.stringify(["message", `over an open session ${i}`])}`, { localAddress: from });
      expect(res.status, `message ${i} on ${sid}: ${res.body}`).to.equal(200);
    }
    for (const sid of sids) {
      const res = await pollingReceive(stack.url, sid, { localAddress: from });
      expect(res.status).to.equal(200);
      expect(res.body).to.include("welcome");
    }

    // 127.0.0.1 is exempt: a burst of the same size, and /ws upgrades, all pass.
    const local = sessions();
    for (let i = 0; i < 30; i++) {
      const h = await pollingHandshake(stack.url, { localAddress: "127.0.0.1" });
      expect(h.status, `local handshake ${i}`).to.equal(200);
      local.push(h.sid!);
    }
    for (let i = 0; i < 10; i++) expect(await tryWs("/ws", "127.0.0.1"), `local /ws ${i}`).to.equal(101);
  });

  it("limits /ws upgrades from one address the same way", async () => {
    const from = "127.0.0.3";
    const started = performance.now();
    const statuses: number[] = [];
    for (let i = 0; i < 15; i++) statuses.push(await tryWs("/ws", from));
    const elapsedSec = (performance.now() - started) / 1000;
    expect(
      statuses.every((s) => s === 101 || s === 429),
      JSON.stringify(statuses),
    ).to.equal(true);
    expect(statuses.slice(0, INSTANT)).to.deep.equal(Array(INSTANT).fill(101));
    expect(statuses.filter((s) => s === 101).length).to.be.at.most(INSTANT + Math.ceil(LIMITS.sessionsPerSec * elapsedSec) + 1);
    expect(statuses.filter((s) => s === 429).length).to.be.greaterThan(0);
    expect(await tryWs("/ws/named-local", "127.0.0.1")).to.equal(101);
  });

  it("holds at most connPerAddress connections from one address: past it every request gets 429 until one closes; 127.0.0.1 unaffected", async () => {
    const from = "127.0.0.4";
    // Three /ws from the address itself (within the burst), then sessions opened
    // from 127.0.0.1 and upgraded from the address: requests of a session, so
    // only limit_conn applies to them.
    const held: { close(): void }[] = [];
    const lines: WsClient[] = [];
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await openWs("/ws", from);
      lines.push(c);
      held.push({ close: () => c.close() });
      statuses.push(101);
    }
    const sids = sessions();
    for (let i = 0; i < 22; i++) {
      const h = await pollingHandshake(stack.url);
      expect(h.status).to.equal(200);
      sids.push(h.sid!);
    }
    const upgraded: WebSocket[] = [];
    defer(() => upgraded.forEach((ws) => ws.terminate()));
    for (const sid of sids) {
      try {
        const ws = await upgradeSession(wsBase, sid, { localAddress: from });
        upgraded.push(ws);
        held.push({ close: () => ws.close() });
        statuses.push(101);
      } catch (err) {
        const status = (err as { status?: number }).status;
        if (status === undefined) throw err;
        statuses.push(status);
      }
    }
    // 25 connections asked for, in order: the first 20 held, the rest refused.
    expect(statuses).to.deep.equal([...Array(LIMITS.connPerAddress).fill(101), ...Array(25 - LIMITS.connPerAddress).fill(429)]);

    // Full: anything from that address is refused, even what no rate limit covers.
    expect((await httpRequest(`${stack.url}/healthz`, { localAddress: from })).status).to.equal(429);
    expect((await pollingHandshake(stack.url, { localAddress: from })).status).to.equal(429);
    expect(await tryWs("/ws", from)).to.equal(429);
    // Meanwhile 127.0.0.1 passes.
    expect((await httpRequest(`${stack.url}/healthz`, { localAddress: "127.0.0.1" })).status).to.equal(200);
    const localSid = (await pollingHandshake(stack.url, { localAddress: "127.0.0.1" })).sid;
    expect(localSid).to.be.a("string");
    sids.push(localSid!);
    expect(await tryWs("/ws", "127.0.0.1")).to.equal(101);
    // The held ones still work: a broadcast reaches the /ws ones.
    const res = await httpRequest(`${stack.url}/broadcast-to-all`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${stack.adminToken}` },
      body: '{"message":"to the held"}',
      localAddress: "127.0.0.1",
    });
    expect(res.status).to.equal(200);
    for (const line of lines) await line.next((l) => l === "to the held");

    // One closes: the address gets a slot back (once nginx has seen the close), and only one.
    held[0]!.close();
    const deadline = Date.now() + 5_000;
    let status = 429;
    while (status === 429 && Date.now() < deadline) status = (await httpRequest(`${stack.url}/healthz`, { localAddress: from })).status;
    expect(status).to.equal(200);
    const refill = await pollingHandshake(stack.url);
    sids.push(refill.sid!);
    upgraded.push(await upgradeSession(wsBase, refill.sid!, { localAddress: from }));
    expect((await httpRequest(`${stack.url}/healthz`, { localAddress: from })).status).to.equal(429);
  });
});

describe("renderNginxConf with nginxLimits", () => {
  it("renders the limits into every directive that has them, and nothing else", async () => {
    const source = await readFile(NGINX_CONF, "utf8");
    const rendered = renderNginxConf(source, 40000, "/tmp/stack-x", { limits: { connPerAddress: 7, sessionsPerSec: 3, burst: 4 } });
    const plain = renderNginxConf(source, 40000, "/tmp/stack-x");
    const code = rendered.replace(/#[^\n]*/g, "");
    expect(code).to.match(/\blimit_conn\s+per_addr\s+7\s*;/);
    expect(code).to.match(/\blimit_req_zone\s+\S+\s+zone=new_sessions:\w+\s+rate=3r\/s\s*;/);
    const bursts = [...code.matchAll(/\blimit_req\s+zone=new_sessions\s+burst=(\d+)/g)].map((m) => m[1]);
    expect(bursts.length).to.be.at.least(2);
    expect(new Set(bursts)).to.deep.equal(new Set(["4"]));
    // Only those numbers differ from the plain rendering.
    const diff = rendered.split("\n").filter((line, i) => line !== plain.split("\n")[i]);
    expect(diff).to.have.length(2 + bursts.length);
    for (const line of diff) expect(line).to.match(/\blimit_(conn|req|req_zone)\b/);
    // A config without the directives cannot be given limits.
    const bare = source.replace(/^\s*limit_conn\s+per_addr\s+\d+\s*;\s*$/m, "");
    expect(() => renderNginxConf(bare, 40000, "/tmp/x", { limits: { connPerAddress: 7 } })).to.throw(/limit_conn per_addr/);
    expect(() => renderNginxConf(bare, 40000, "/tmp/x", { limits: { burst: 4 } })).to.not.throw();
    expect(() => renderNginxConf(source, 40000, "/tmp/x", { limits: { sessionsPerSec: 0.5 } })).to.throw(/sessionsPerSec/);
  });
});
