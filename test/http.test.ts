import { expect } from "chai";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs } from "./helpers/clients.js";

const post = (url: string, body: string, headers: Record<string, string> = { "content-type": "application/json" }) =>
  fetch(`${url}/broadcast-to-all`, { method: "POST", headers, body });

describe("HTTP API", () => {
  const defer = useCleanup();
  let t: TestApp;

  beforeEach(async () => {
    t = await startApp({ MAX_MESSAGE_BYTES: "100" });
    defer(() => t.close());
  });

  describe("POST /broadcast-to-all", () => {
    it("sends the text to every connection of every transport and answers { sent: n }", async () => {
      const io = await connectIo(t.url, { clientId: "s1" });
      const poll = await connectIo(t.url, { clientId: "s2", transports: ["polling"] });
      const ws = await connectWs(`${t.wsUrl}/ws`);
      const echo = await connectWs(`${t.wsUrl}/ws/9`);
      defer(() => [io, poll, ws, echo].forEach((c) => c.close()));
      const res = await post(t.url, JSON.stringify({ message: "Hello, clients!" }));
      expect(res.status).to.equal(200);
      expect(await res.json()).to.deep.equal({ sent: 4, partial: false });
      for (const c of [io, poll]) expect(await c.next("message")).to.include({ text: "Hello, clients!", from: "http", origin: "http" });
      for (const c of [ws, echo]) expect(await c.next((l) => !l.startsWith(" Welcome"))).to.equal("Hello, clients!");
    });

    it("sends to a room's members only when room is given", async () => {
      const member = await connectIo(t.url, { clientId: "m" });
      const other = await connectIo(t.url, { clientId: "o" });
      defer(() => [member, other].forEach((c) => c.close()));
      await member.socket.emitWithAck("join", "ops");
      const res = await post(t.url, JSON.stringify({ message: "ops only", room: "ops" }));
      expect(await res.json()).to.deep.equal({ sent: 1, partial: false });
      expect(await member.next("message")).to.include({ text: "ops only", room: "ops" });
      await post(t.url, JSON.stringify({ message: "sentinel" }));
      expect((await other.next("message")).text).to.equal("sentinel");
    });

    it("answers { sent: 0 } with nobody connected", async () => {
      expect(await (await post(t.url, '{"message":"anyone?"}')).json()).to.deep.equal({ sent: 0, partial: false });
    });

    const bad: [string, string, Record<string, string> | undefined, number, RegExp][] = [
      ["bad JSON", '{"message":', undefined, 400, /not valid JSON/],
      ["a missing message", "{}", undefined, 400, /non-empty string/],
      ["a non-string message", '{"message": 5}', undefined, 400, /non-empty string/],
      ["an empty message", '{"message": ""}', undefined, 400, /non-empty string/],
      ["a JSON array", "[1]", undefined, 400, /JSON object/],
      ["a bad room", '{"message":"x","room":"a b"}', undefined, 400, /room/],
      ["a message over MAX_MESSAGE_BYTES", JSON.stringify({ message: "é".repeat(51) }), undefined, 413, /larger than 100 bytes/],
      ["a body far over the limit", JSON.stringify({ message: "x".repeat(10_000) }), undefined, 413, /larger than 100 bytes/],
      ["a body that is not JSON", "message=hi", { "content-type": "application/x-www-form-urlencoded" }, 400, /Content-Type: application\/json/],
    ];
    for (const [what, body, headers, status, error] of bad) {
      it(`answers ${what} with ${status} and a JSON { error }`, async () => {
        const res = await post(t.url, body, headers);
        expect(res.status).to.equal(status);
        expect(res.headers.get("content-type")).to.match(/application\/json/);
        const json = (await res.json()) as { error: string };
        expect(json.error).to.match(error);
      });
    }
  });

  describe("probes and metrics", () => {
    it("GET /healthz answers status, instance, pid and draining", async () => {
      const res = await fetch(`${t.url}/healthz`);
      expect(res.status).to.equal(200);
      expect(await res.json()).to.deep.equal({ status: "ok", instance: "test-1", pid: process.pid, draining: false });
    });

    it("GET /readyz answers 200 while running", async () => {
      const res = await fetch(`${t.url}/readyz`);
      expect(res.status).to.equal(200);
      expect(await res.json()).to.include({ ready: true, draining: false });
    });

    it("GET /metrics counts connections by transport, messages, broadcasts and refusals", async () => {
      const io = await connectIo(t.url, { clientId: "m1" });
      const ws = await connectWs(`${t.wsUrl}/ws`);
      defer(() => [io, ws].forEach((c) => c.close()));
      await io.socket.emitWithAck("message", "one");
      await io.socket.emitWithAck("message", "");
      await io.next("message");
      const text = await (await fetch(`${t.url}/metrics`)).text();
      expect(text).to.match(/^wbs_connections\{transport="socket.io",via="websocket"\} 1$/m);
      expect(text).to.match(/^wbs_connections\{transport="ws",via="websocket"\} 1$/m);
      expect(text).to.match(/^wbs_messages_received_total\{transport="socket.io"\} 2$/m);
      expect(text).to.match(/^wbs_messages_sent_total\{transport="socket.io"\} 1$/m);
      expect(text).to.match(/^wbs_messages_sent_total\{transport="ws"\} 1$/m);
      expect(text).to.match(/^wbs_broadcasts_total\{origin="socket.io"\} 1$/m);
      expect(text).to.match(/^wbs_refusals_total\{code="BAD_REQUEST"\} 1$/m);
      expect(text).to.match(/^wbs_draining 0$/m);
      expect(text).to.match(/^process_resident_memory_bytes \d+/m);
    });

    it("answers unknown routes with 404 JSON", async () => {
      const res = await fetch(`${t.url}/nope`);
      expect(res.status).to.equal(404);
      expect(await res.json()).to.deep.equal({ error: "no route for /nope", code: "NOT_FOUND" });
    });

    it("serves the Socket.IO client bundle", async () => {
      const res = await fetch(`${t.url}/socket.io/socket.io.min.js`);
      expect(res.status).to.equal(200);
      expect(await res.text()).to.include("socket.io");
    });

    it("serves the client bundle while draining, when new Engine.IO sessions get 503", async () => {
      const stay = await connectIo(t.url, { clientId: "keeps-it-draining" });
      try {
        t.app.shutdown.begin("test");
        expect((await fetch(`${t.url}/socket.io/?EIO=4&transport=polling`)).status).to.equal(503);
        const res = await fetch(`${t.url}/socket.io/socket.io.min.js`);
        expect(res.status).to.equal(200);
        expect(await res.text()).to.include("socket.io");
      } finally {
        stay.close();
      }
    });
  });
});

describe("HTTP API with ADMIN_TOKEN", () => {
  const defer = useCleanup();
  it("requires the bearer token on /broadcast-to-all and /clients only", async () => {
    const t = await startApp({ ADMIN_TOKEN: "s3cret" });
    defer(() => t.close());
    for (const [path, init] of [
      ["/clients", {}],
      ["/broadcast-to-all", { method: "POST", headers: { "content-type": "application/json" }, body: '{"message":"x"}' }],
    ] as const) {
      const none = await fetch(`${t.url}${path}`, init);
      expect(none.status, path).to.equal(401);
      expect(await none.json()).to.deep.equal({ error: "missing or wrong bearer token", code: "UNAUTHORIZED" });
      const wrong = await fetch(`${t.url}${path}`, { ...init, headers: { ...("headers" in init ? init.headers : {}), authorization: "Bearer nope" } });
      expect(wrong.status, path).to.equal(401);
      const right = await fetch(`${t.url}${path}`, { ...init, headers: { ...("headers" in init ? init.headers : {}), authorization: "Bearer s3cret" } });
      expect(right.status, path).to.equal(200);
    }
    expect((await fetch(`${t.url}/healthz`)).status).to.equal(200);
    expect((await fetch(`${t.url}/metrics`)).status).to.equal(200);
  });
});
