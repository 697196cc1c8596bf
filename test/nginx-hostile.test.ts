import { expect } from "chai";
import { type Stack, startStack } from "../harness/stack.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";
import { expectAlive } from "./helpers/process.js";
import { jsonBody, rawExchange, upgradeHeaders } from "./helpers/raw-http.js";

const wsUrl = (url: string) => url.replace(/^http/, "ws");
/** How long nginx may take to answer an API request while an instance is frozen. */
const BOUND_MS = 15_000;

interface Timed {
  /** The HTTP status, or "no answer" when the client gave up (well past BOUND_MS). */
  status: number | "no answer";
  body: any;
  ms: number;
}

describe("nginx with a frozen or hostile upstream (the shipped nginx.conf)", function () {
  this.timeout(60_000);
  const defer = useCleanup();
  let stack: Stack;

  before(async function () {
    this.timeout(90_000);
    stack = await startStack({ env: { PERIODIC_INTERVAL_SEC: "0", FORCED_SHUTDOWN_AFTER_SEC: "5" } });
  });
  after(async function () {
    this.timeout(60_000);
    await stack?.stop({ graceMs: 5_000 });
  });

  /** One request through nginx, timed; the client gives up at BOUND_MS + 5 s so a hang fails the test instead of stalling it. */
  const timed = async (method: "GET" | "POST", path: string, body?: object): Promise<Timed> => {
    const started = performance.now();
    try {
      const res = await fetch(`${stack.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${stack.adminToken}`, ...(body ? { "content-type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(BOUND_MS + 5_000),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // nginx's own pages may be HTML
      }
      return { status: res.status, body: parsed, ms: performance.now() - started };
    } catch {
      return { status: "no answer", body: undefined, ms: performance.now() - started };
    }
  };

  it("answers GET /clients (200, partial) and POST /broadcast-to-all (200 or 504) within 15 s each while an instance is frozen", async () => {
    const frozen = stack.instances[2]!;
    // Registered first: whatever happens below, the instance runs again.
    defer(() => {
      try {
        process.kill(frozen.pid, "SIGCONT");
      } catch {
        // gone already
      }
    });
    process.kill(frozen.pid, "SIGSTOP");

    // All at once: least_conn spreads them, so some land on the frozen instance.
    const [gets, posts] = await Promise.all([
      Promise.all(Array.from({ length: 8 }, () => timed("GET", "/clients"))),
      Promise.all(Array.from({ length: 4 }, (_, i) => timed("POST", "/broadcast-to-all", { message: `during the freeze ${i}` }))),
    ]);
    const show = (ts: Timed[]) => ts.map((t) => `${t.status} in ${(t.ms / 1000).toFixed(1)} s`).join(", ");
    console.log(`      GET /clients: ${show(gets)}\n      POST /broadcast-to-all: ${show(posts)}`);

    for (const g of gets) {
      expect(g.ms, `GET /clients answered ${g.status} after ${Math.round(g.ms)} ms`).to.be.below(BOUND_MS);
      expect(g.status, JSON.stringify(g.body)).to.equal(200);
      // The frozen instance does not answer the cluster query.
      expect(g.body.partial, JSON.stringify(g.body)).to.equal(true);
    }
    for (const p of posts) {
      expect(p.ms, `POST /broadcast-to-all answered ${p.status} after ${Math.round(p.ms)} ms`).to.be.below(BOUND_MS);
      // 504: it landed on the frozen instance (and is not replayed elsewhere).
      expect(p.status, JSON.stringify(p.body)).to.be.oneOf([200, 504]);
      if (p.status === 200) expect(p.body.partial, JSON.stringify(p.body)).to.equal(true);
    }
  });

  it("passes the malformed /ws/{clientId} upgrade's 400 through, and all four instances stay up and keep serving", async () => {
    const host = `127.0.0.1:${stack.nginxPort}`;
    // What `curl -H 'Connection: Upgrade' -H 'Upgrade: websocket' ...` sends: the bytes as typed.
    // nginx passes %FF on (well-formed percent-encoding, just not UTF-8): the instance answers.
    const res = await rawExchange(stack.nginxPort, { target: "/ws/%FF", headers: upgradeHeaders(host) }, { timeoutMs: BOUND_MS });
    expect(res.status, `/ws/%FF: ${res.statusLine} ${res.body.toString().slice(0, 200)}`).to.equal(400);
    expect(jsonBody(res), "/ws/%FF").to.include({ code: "INVALID_CLIENT_ID" });
    // Malformed percent-encoding: nginx may refuse it itself; a 400 either way.
    for (const path of ["/ws/%ZZ", "/ws/%E0%A4%A"]) {
      const bad = await rawExchange(stack.nginxPort, { target: path, headers: upgradeHeaders(host) }, { timeoutMs: BOUND_MS });
      expect(bad.status, `${path}: ${bad.statusLine} ${bad.body.toString().slice(0, 200)}`).to.equal(400);
    }
    for (let i = 0; i < stack.instances.length; i++) {
      await expectAlive(stack.instances[i]!, "/ws/%FF through nginx");
      const health = await fetch(`${stack.instanceUrl(i)}/healthz`);
      expect(health.status, `ws${i + 1} /healthz`).to.equal(200);
    }
    const sio = await connectIo(stack.url);
    defer(() => sio.close());
    expect((await sio.next("welcome")).instance).to.match(/^ws[1-4]$/);
    const line = await connectWs(`${wsUrl(stack.url)}/ws`);
    defer(() => line.close());
    expect(await line.next()).to.match(/^ Welcome! Connected to Instance \[ws[1-4]\]/);
  });
});
