import { expect } from "chai";
import { freePort } from "../harness/ports.js";
import { startInstance } from "../harness/instance.js";
import { ConfigError, loadConfig } from "../server/config.js";
import { startApp, type TestApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { connectIo, connectWs, type IoClient, ioRefusal, type WsClient, wsRefusal } from "./helpers/clients.js";
import { hmacKey, jwtKeyPair, signJwt, unsignedJwt } from "./helpers/jwt.js";

const SECRET = "test-secret-of-at-least-32-bytes-0123456789";
const hs256 = (claims: Parameters<typeof signJwt>[2]) => signJwt(hmacKey(SECRET), "HS256", claims);
const past = () => Math.floor(Date.now() / 1000) - 60;

const post = (url: string, headers: Record<string, string> = {}) =>
  fetch(`${url}/broadcast-to-all`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: '{"message":"admin says hi"}' });
const clients = (url: string, headers: Record<string, string> = {}) => fetch(`${url}/clients`, { headers });

describe("admin endpoints (secure default, ADMIN_OPEN, ADMIN_TOKEN)", function () {
  this.timeout(20_000);
  const defer = useCleanup();

  const app = async (env: Record<string, string>): Promise<TestApp> => {
    const t = await startApp(env);
    defer(() => t.close());
    return t;
  };
  const adminWarnings = (t: TestApp) => t.logs.all((r) => r.level === "warn" && r.msg.includes("admin endpoints answer only"));

  const expectProbesOpen = async (url: string) => {
    for (const path of ["/healthz", "/readyz", "/metrics"]) expect((await fetch(`${url}${path}`)).status, path).to.equal(200);
  };

  it("without ADMIN_TOKEN: 403 ADMIN_DISABLED through a proxy, probes open, one warning", async () => {
    const t = await app({ HOST: "0.0.0.0" });
    const viaProxy = { "x-forwarded-for": "203.0.113.9" };
    for (const res of [await post(t.url, viaProxy), await clients(t.url, viaProxy), await post(t.url, { ...viaProxy, authorization: "Bearer guess" })]) {
      expect(res.status).to.equal(403);
      const body = (await res.json()) as { code: string; error: string };
      expect(body.code).to.equal("ADMIN_DISABLED");
      expect(body.error).to.include("ADMIN_TOKEN").and.include("ADMIN_OPEN");
    }
    for (const header of ["forwarded", "x-real-ip"]) expect((await clients(t.url, { [header]: "for=203.0.113.9" })).status, header).to.equal(403);
    // The operator on this machine, with no proxy in between, is answered.
    expect((await clients(t.url)).status, "a direct loopback caller").to.equal(200);
    await expectProbesOpen(t.url);
    expect(adminWarnings(t)).to.have.length(1);
    // Clients are not admin: they connect and broadcast as ever.
    const c = await connectIo(t.url, { clientId: "public" });
    defer(() => c.close());
    expect(await c.socket.emitWithAck("message", "hello")).to.deep.equal({ ok: true });
    expect((await c.next("message")).text).to.equal("hello");
  });

  it("a real process behind a loopback proxy answers 403 to what the proxy forwards", async () => {
    const port = await freePort();
    const inst = await startInstance({
      env: { HOST: "0.0.0.0", PORT: String(port), INSTANCE_ID: "public-1", PERIODIC_INTERVAL_SEC: "0", TRUST_PROXY: "127.0.0.1" },
    });
    defer(() => inst.stop(2_000));
    const url = `http://127.0.0.1:${port}`;
    const viaProxy = { "x-forwarded-for": "203.0.113.9" };
    expect((await post(url, viaProxy)).status).to.equal(403);
    expect((await clients(url, viaProxy)).status).to.equal(403);
    expect((await clients(url)).status, "a direct loopback caller").to.equal(200);
    await expectProbesOpen(url);
    expect(inst.logs.filter((r) => r.level === "warn" && r.msg.includes("admin endpoints answer only"))).to.have.length(1);
  });

  it("ADMIN_OPEN=true on a non-loopback address opens them without a token, and does not warn", async () => {
    const t = await app({ HOST: "0.0.0.0", ADMIN_OPEN: "true" });
    const res = await post(t.url);
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ sent: 0, partial: false });
    expect((await clients(t.url)).status).to.equal(200);
    expect(adminWarnings(t)).to.deep.equal([]);
  });

  it("ADMIN_TOKEN on a non-loopback address: 401 without or with a wrong token, 200 with it; probes open", async () => {
    const t = await app({ HOST: "0.0.0.0", ADMIN_TOKEN: "secret" });
    for (const send of [post, clients]) {
      const none = await send(t.url);
      expect(none.status).to.equal(401);
      expect(await none.json()).to.include({ code: "UNAUTHORIZED" });
      expect((await send(t.url, { authorization: "Bearer wrong" })).status).to.equal(401);
      expect((await send(t.url, { authorization: "Bearer secret" })).status).to.equal(200);
    }
    await expectProbesOpen(t.url);
    expect(adminWarnings(t)).to.deep.equal([]);
  });

  it("on a loopback address without a token: open, as before, and no warning", async () => {
    const t = await app({ HOST: "127.0.0.1" });
    expect((await post(t.url)).status).to.equal(200);
    const res = await clients(t.url);
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.equal({ clients: [], connections: [], partial: false });
    expect(adminWarnings(t)).to.deep.equal([]);
  });
});

describe("client tokens (AUTH_JWT_*)", function () {
  this.timeout(20_000);
  const defer = useCleanup();

  const io = async (t: TestApp, opts: Parameters<typeof connectIo>[1]): Promise<IoClient> => {
    const c = await connectIo(t.url, opts);
    defer(() => c.close());
    return c;
  };
  const ws = async (url: string, options: Parameters<typeof connectWs>[1] = {}): Promise<WsClient> => {
    const c = await connectWs(url, options);
    defer(() => c.close());
    return c;
  };
  const unauthorizedIo = async (
    t: TestApp,
    auth: Record<string, unknown>,
    transports: ("polling" | "websocket")[] = ["websocket"],
    code: "UNAUTHORIZED" | "TOKEN_EXPIRED" = "UNAUTHORIZED",
  ) => {
    const err = await ioRefusal(t.url, { auth, transports });
    expect(err.data?.code, `${JSON.stringify(auth)}: ${err.message}`).to.equal(code);
  };
  const unauthorizedWs = async (url: string, options: Parameters<typeof wsRefusal>[1] = {}, code: "UNAUTHORIZED" | "TOKEN_EXPIRED" = "UNAUTHORIZED") => {
    const refused = await wsRefusal(url, options);
    expect(refused.status, url).to.equal(401);
    expect(JSON.parse(refused.body)).to.include({ code });
  };

  describe("with AUTH_JWT_SECRET (HS256)", () => {
    let t: TestApp;
    before(async () => {
      t = await startApp({ AUTH_JWT_SECRET: SECRET });
    });
    after(async () => {
      await t?.close();
    });

    it("Socket.IO: refuses a missing, forged, expired, unsigned or garbled token with UNAUTHORIZED", async () => {
      const forged = await signJwt(hmacKey(`${SECRET}-not`), "HS256", { sub: "mallory" });
      const expired = await hs256({ sub: "late", exp: past() });
      for (const auth of [
        {},
        { token: "" },
        { token: 42 },
        { token: forged },
        { token: unsignedJwt({ sub: "nobody" }) },
        { token: "not.a.jwt" },
        { clientId: "no-token" },
      ]) {
        await unauthorizedIo(t, auth);
      }
      await unauthorizedIo(t, {}, ["polling"]);
      await unauthorizedIo(t, { token: expired }, ["websocket"], "TOKEN_EXPIRED");
      // None of them holds an id or a connection now.
      expect(await (await fetch(`${t.url}/clients`)).json()).to.deep.equal({ clients: [], connections: [], partial: false });
    });

    it("Socket.IO: a good token makes its sub the user, on both transports", async () => {
      for (const transport of ["websocket", "polling"] as const) {
        const sub = `alice-${transport}`;
        const c = await io(t, { auth: { token: await hs256({ sub, wbs: { broadcast: true } }) }, transports: [transport] });
        const welcome = await c.next("welcome");
        expect(welcome.user).to.equal(sub);
        expect(welcome.clientId, "a connection id of its own").to.match(/^anon-/);
        await c.socket.emitWithAck("message", `from ${sub}`);
        expect(await c.next("message")).to.include({ text: `from ${sub}`, from: welcome.clientId });
      }
    });

    it("Socket.IO: auth.clientId names the connection, unique cluster-wide; a sub that is not a valid user id is refused", async () => {
      const token = await hs256({ sub: "bob" });
      const c = await io(t, { auth: { token, clientId: "bob-laptop" } });
      expect(await c.next("welcome")).to.include({ clientId: "bob-laptop", user: "bob" });
      for (const sub of ["has space", "x".repeat(65), "ünï", ""]) await unauthorizedIo(t, { token: await hs256({ sub }) });
      await unauthorizedIo(t, { token: await hs256({}) });
      // A connection id asked for is one connection's at a time, whoever asks.
      const dup = await ioRefusal(t.url, { auth: { token, clientId: "bob-laptop" } });
      expect(dup.data?.code).to.equal("DUPLICATE_CLIENT_ID");
    });

    it("/ws: 401 before the upgrade for a missing, forged, expired or unsigned token", async () => {
      const forged = await signJwt(hmacKey(`${SECRET}-not`), "HS256", { sub: "mallory" });
      const expired = await hs256({ sub: "late", exp: past() });
      await unauthorizedWs(`${t.wsUrl}/ws`);
      await unauthorizedWs(`${t.wsUrl}/ws/some-id`);
      for (const token of [forged, unsignedJwt({ sub: "nobody" }), "not.a.jwt"]) {
        await unauthorizedWs(`${t.wsUrl}/ws?token=${encodeURIComponent(token)}`);
        await unauthorizedWs(`${t.wsUrl}/ws`, { headers: { authorization: `Bearer ${token}` } });
      }
      await unauthorizedWs(`${t.wsUrl}/ws?token=${expired}`, {}, "TOKEN_EXPIRED");
      await unauthorizedWs(`${t.wsUrl}/ws`, { headers: { authorization: `Bearer ${await hs256({ sub: "bad sub" })}` } });
    });

    it("/ws: a good token in ?token= or Authorization: Bearer makes its sub the user", async () => {
      const viaQuery = await ws(`${t.wsUrl}/ws?token=${await hs256({ sub: "carol" })}`);
      expect(await viaQuery.next()).to.match(/^ Welcome! Connected to Instance \[test-1\] as anon-\S+ at \d\d:\d\d:\d\d\./);
      const viaHeader = await ws(`${t.wsUrl}/ws?format=json`, {
        headers: { authorization: `Bearer ${await hs256({ sub: "dave", wbs: { broadcast: true } })}` },
      });
      const dave = await viaHeader.nextJson("welcome");
      expect(dave.user).to.equal("dave");
      viaHeader.ws.send("dave speaking");
      expect(await viaQuery.next((l) => l.startsWith("User"))).to.equal(`User ${dave.clientId} (via test-1) says: dave speaking`);
    });

    it("/ws/{clientId}: the path names the connection; its user is the sub", async () => {
      const token = await hs256({ sub: "frank" });
      const echo = await ws(`${t.wsUrl}/ws/frank-echo?token=${token}`);
      expect(await echo.next()).to.match(/ as frank-echo at /);
      echo.ws.send("hi");
      expect(await echo.next()).to.equal("Server echo: hi");
      const listed = (await (await fetch(`${t.url}/clients`)).json()) as { connections: { clientId: string; user: string }[] };
      expect(listed.connections.find((c) => c.clientId === "frank-echo")).to.include({ user: "frank", transport: "ws" });
    });
  });

  describe("with AUTH_JWT_PUBLIC_KEY", () => {
    it("ES256 (AUTH_JWT_ALGORITHM=ES256): accepts tokens of its key only", async () => {
      const { privateKey, publicPem } = await jwtKeyPair("ES256");
      const other = await jwtKeyPair("ES256");
      const t = await startApp({ AUTH_JWT_PUBLIC_KEY: publicPem, AUTH_JWT_ALGORITHM: "ES256" });
      defer(() => t.close());
      const good = await signJwt(privateKey, "ES256", { sub: "es-user" });
      const c = await io(t, { auth: { token: good } });
      expect((await c.next("welcome")).user).to.equal("es-user");
      const line = await ws(`${t.wsUrl}/ws/es-line?token=${await signJwt(privateKey, "ES256", { sub: "es-line" })}`);
      expect(await line.next()).to.match(/ as es-line at /);

      const wrongKey = await signJwt(other.privateKey, "ES256", { sub: "es-user-2" });
      // Algorithm confusion: an HMAC over the public key's text must not pass.
      const confused = await signJwt(hmacKey(publicPem), "HS256", { sub: "es-user-3" });
      const expired = await signJwt(privateKey, "ES256", { sub: "es-user-4", exp: past() });
      for (const token of [wrongKey, confused, unsignedJwt({ sub: "es-user-5" })]) {
        await unauthorizedIo(t, { token });
        await unauthorizedWs(`${t.wsUrl}/ws?token=${token}`);
      }
      await unauthorizedIo(t, { token: expired }, ["websocket"], "TOKEN_EXPIRED");
    });

    it("RS256 by default", async () => {
      const { privateKey, publicPem } = await jwtKeyPair("RS256");
      const es = await jwtKeyPair("ES256");
      const t = await startApp({ AUTH_JWT_PUBLIC_KEY: publicPem });
      defer(() => t.close());
      const c = await io(t, { auth: { token: await signJwt(privateKey, "RS256", { sub: "rs-user" }) } });
      expect((await c.next("welcome")).user).to.equal("rs-user");
      await unauthorizedIo(t, { token: await signJwt(es.privateKey, "ES256", { sub: "rs-user-2" }) });
    });

    it("a key that is not a PEM public key stops the start-up", async () => {
      let err: unknown;
      try {
        const t = await startApp({ AUTH_JWT_PUBLIC_KEY: "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----" });
        await t.close();
      } catch (e) {
        err = e;
      }
      expect((err as Error | undefined)?.message).to.match(/AUTH_JWT_PUBLIC_KEY/);
    });
  });

  it("checks AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE when set", async () => {
    const t = await startApp({ AUTH_JWT_SECRET: SECRET, AUTH_JWT_ISSUER: "https://issuer.example", AUTH_JWT_AUDIENCE: "wbs" });
    defer(() => t.close());
    const c = await io(t, { auth: { token: await hs256({ sub: "grace", iss: "https://issuer.example", aud: "wbs" }) } });
    expect((await c.next("welcome")).user).to.equal("grace");
    const line = await ws(`${t.wsUrl}/ws?format=json&token=${await hs256({ sub: "heidi", iss: "https://issuer.example", aud: ["other", "wbs"] })}`);
    expect(await line.nextJson("welcome")).to.include({ user: "heidi" });
    for (const claims of [
      { sub: "ivan", iss: "https://evil.example", aud: "wbs" },
      { sub: "ivan", aud: "wbs" },
      { sub: "ivan", iss: "https://issuer.example", aud: "other" },
      { sub: "ivan", iss: "https://issuer.example" },
    ]) {
      const token = await hs256(claims);
      await unauthorizedIo(t, { token });
      await unauthorizedWs(`${t.wsUrl}/ws?token=${token}`);
    }
  });

  it("without AUTH_JWT_* variables no token is needed, as before", async () => {
    const t = await startApp({});
    defer(() => t.close());
    const c = await io(t, {});
    expect((await c.next("welcome")).clientId).to.match(/^anon-/);
    const named = await io(t, { clientId: "plain" });
    expect((await named.next("welcome")).clientId).to.equal("plain");
    const line = await connectWs(`${t.wsUrl}/ws`);
    defer(() => line.close());
    expect(await line.next()).to.match(/Welcome!/);
  });

  it("refuses a contradictory configuration at start-up", () => {
    const publicPem = "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----";
    for (const env of [
      { AUTH_JWT_SECRET: SECRET, AUTH_JWT_PUBLIC_KEY: publicPem },
      { AUTH_JWT_SECRET: SECRET, AUTH_JWT_ALGORITHM: "none" },
      { AUTH_JWT_PUBLIC_KEY: publicPem, AUTH_JWT_ALGORITHM: "HS256" },
    ]) {
      expect(() => loadConfig(env), JSON.stringify(Object.keys(env))).to.throw(ConfigError, /AUTH_JWT/);
    }
  });
});
