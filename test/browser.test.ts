import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import express from "express";
import { type Browser, type BrowserContext, type Locator, type Page, chromium } from "playwright-core";
import { type Stack, startStack } from "../harness/stack.js";
import { type TestApp, startApp } from "./helpers/app.js";
import { useCleanup } from "./helpers/cleanup.js";
import { startDrainingServer } from "./helpers/draining-server.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEMO_DIR = path.join(ROOT, "client-demo", "public");
const SHOTS = path.join(ROOT, "test-output", "screenshots");
/** Debian's Chromium; CI installs it. We never download a browser. */
const CHROMIUM = "/usr/bin/chromium";
const ADMIN_TOKEN = "browser-test-token";
const WAIT_MS = 10_000;

const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`browser tests skipped: ${CHROMIUM} is missing (CI installs the chromium package)`);
const suite = hasChromium ? describe : describe.skip;

interface DemoPage {
  page: Page;
  context: BrowserContext;
  /** alert()/confirm() dialogs the page opened: none, ever. */
  dialogs: string[];
  /** Uncaught errors in the page: none, ever. */
  errors: string[];
  /** The instance the page shows (from its latest `welcome`). */
  instance(): Promise<string>;
  clientId(): Promise<string>;
}

suite(`demo page in headless Chromium, through nginx and four instances${hasChromium ? "" : ` (SKIPPED: ${CHROMIUM} is missing)`}`, function () {
  this.timeout(90_000);
  const defer = useCleanup();
  let stack: Stack | undefined;
  let browser: Browser | undefined;
  const pages: DemoPage[] = [];

  before(async function () {
    this.timeout(60_000);
    await mkdir(SHOTS, { recursive: true });
    stack = await startStack({ env: { FORCED_SHUTDOWN_AFTER_SEC: "1", PERIODIC_INTERVAL_SEC: "0", ADMIN_TOKEN } });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
  });

  // Runs even when `before` or a test failed: nothing outlives the suite.
  after(async function () {
    this.timeout(60_000);
    await browser?.close().catch(() => undefined);
    await stack?.stop({ graceMs: 5_000 });
  });

  afterEach(() => {
    // Every page of every test must have stayed free of dialogs and script errors.
    for (const p of pages.splice(0)) {
      expect(p.dialogs, "dialogs").to.deep.equal([]);
      expect(p.errors, "page errors").to.deep.equal([]);
    }
  });

  const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

  const state = (page: Page) => page.getByTestId("conn-state");

  /** Waits until the page shows a live session: state connected and an instance from `welcome`. */
  const connected = async (page: Page, notOn?: string): Promise<string> => {
    await page.waitForFunction(
      (avoid) => {
        const s = document.querySelector('[data-testid="conn-state"]') as HTMLElement | null;
        const i = document.querySelector('[data-testid="instance"]')?.textContent ?? "";
        return s?.dataset.state === "connected" && /^ws\d$/.test(i) && i !== avoid;
      },
      notOn ?? "",
      { timeout: WAIT_MS },
    );
    return (await page.getByTestId("instance").textContent()) ?? "";
  };

  /** A fresh browser context (its own session) on the demo page through nginx (or at `base`), connecting or not. */
  const load = async (clientId?: string, viewport = { width: 1280, height: 860 }, base = stack!.url): Promise<DemoPage> => {
    const context = await browser!.newContext({ viewport });
    defer(() => context.close());
    const page = await context.newPage();
    const p: DemoPage = {
      page,
      context,
      dialogs: [],
      errors: [],
      instance: async () => (await page.getByTestId("instance").textContent()) ?? "",
      clientId: async () => (await page.getByTestId("client-id").textContent()) ?? "",
    };
    pages.push(p);
    page.on("dialog", (d) => {
      p.dialogs.push(`${d.type()}: ${d.message()}`);
      void d.dismiss();
    });
    page.on("pageerror", (err) => p.errors.push(err.message));
    await page.goto(`${base}/${clientId ? `?clientId=${encodeURIComponent(clientId)}` : ""}`);
    return p;
  };

  /** {@link load}, then waits until the page is connected. */
  const open = async (...args: Parameters<typeof load>): Promise<DemoPage> => {
    const p = await load(...args);
    await connected(p.page);
    return p;
  };

  /**
   * A real instance of its own (no nginx in front: the page meets its answers
   * first-hand) with `holder` connected; the caller begins the drain. The
   * holder keeps the draining instance open (with no client left it would close at once).
   */
  const instanceWithHolder = async (holder: string): Promise<{ t: TestApp; holder: DemoPage }> => {
    const t = await startApp({ INSTANCE_ID: "ws7", FORCED_SHUTDOWN_AFTER_SEC: "60" });
    defer(() => t.close());
    return { t, holder: await open(holder, undefined, t.url) };
  };

  /** Opens pages until two are on different instances (nginx spreads new sessions); closes the extras. */
  const twoInstances = async (a: string, b: string): Promise<[DemoPage, DemoPage]> => {
    const first = await open(a);
    const firstOn = await first.instance();
    for (let i = 0; i < 8; i++) {
      const p = await open(b);
      if ((await p.instance()) !== firstOn) return [first, p];
      await p.context.close(); // same instance: free the id and try again
      pages.splice(pages.indexOf(p), 1);
    }
    throw new Error(`nine pages in a row landed on ${firstOn}`);
  };

  /** The message item whose text is exactly `text`. */
  const message = (page: Page, text: string): Locator =>
    page.getByTestId("message").filter({ has: page.getByTestId("message-text").getByText(text, { exact: true }) });

  const send = async (page: Page, text: string, room = "") => {
    await page.getByTestId("target").selectOption(room);
    await page.getByTestId("message-input").fill(text);
    await page.getByTestId("message-input").press("Enter");
  };

  const join = async (page: Page, room: string) => {
    await page.getByTestId("room-input").fill(room);
    await page.getByTestId("room-input").press("Enter");
    await page.locator(`[data-testid="room-chip"][data-room="${room}"]`).waitFor({ timeout: WAIT_MS });
  };

  it("two pages on different instances exchange messages; the transport upgrades to WebSocket", async () => {
    const [alice, bob] = await twoInstances("alice", "bob");
    const aliceOn = await alice.instance();
    const bobOn = await bob.instance();
    expect(aliceOn).to.not.equal(bobOn);
    expect(await alice.clientId()).to.equal("alice");

    // The transport shown follows the upgrade.
    await alice.page.waitForFunction(() => document.querySelector('[data-testid="transport"]')?.textContent === "websocket", null, { timeout: WAIT_MS });

    await send(alice.page, "hello from alice");
    for (const p of [alice, bob]) {
      const item = message(p.page, "hello from alice");
      await item.waitFor({ timeout: WAIT_MS });
      expect(await item.getByTestId("message-from").textContent()).to.equal("alice");
      expect(await item.getByTestId("message-instance").textContent()).to.equal(`via ${aliceOn}`);
      expect(await item.locator("time").textContent()).to.match(/^\d\d:\d\d:\d\d$/);
    }
    await send(bob.page, "hi alice, bob here");
    await message(alice.page, "hi alice, bob here").waitFor({ timeout: WAIT_MS });
    expect(await message(alice.page, "hi alice, bob here").getAttribute("data-instance")).to.equal(bobOn);
    expect(await alice.page.getByTestId("send-error").isHidden()).to.equal(true);
    await shot(alice.page, "01-two-instances-alice");
    await shot(bob.page, "02-two-instances-bob");
  });

  it("a room message reaches the room's pages (across instances) and no other", async () => {
    const [red1, red2] = await twoInstances("red1", "red2");
    const outsider = await open("outsider");
    await join(red1.page, "red");
    await join(red2.page, "red");

    await send(red1.page, "for red only", "red");
    const inRed = message(red2.page, "for red only");
    await inRed.waitFor({ timeout: WAIT_MS });
    expect(await inRed.getByTestId("message-room").textContent()).to.equal("#red");
    await message(red1.page, "for red only").waitFor({ timeout: WAIT_MS });

    // Sentinel: the outsider gets the next broadcast, and nothing of red before it.
    await send(red1.page, "everyone, after red", "");
    await message(outsider.page, "everyone, after red").waitFor({ timeout: WAIT_MS });
    expect(await message(outsider.page, "for red only").count()).to.equal(0);
    await shot(red2.page, "03-room-message");
  });

  it("the Status check button shows a status notification listing the four instances", async () => {
    const p = await open("status-asker");
    await p.page.getByTestId("status-button").click();
    const status = p.page.locator('[data-testid="notification"][data-type="status"]').last();
    await status.waitFor({ timeout: WAIT_MS });
    const ids = await status.getByTestId("status-instance").evaluateAll((els) => els.map((e) => e.getAttribute("data-instance")));
    expect(ids).to.deep.equal(["ws1", "ws2", "ws3", "ws4"]);
    expect(await status.textContent()).to.include("Status check by status-asker");
    // Set apart from chat: not a message item.
    expect(await status.getAttribute("class")).to.include("notice");
    await shot(p.page, "04-status-notification");
  });

  it("the admin panel lists clients and broadcasts, with the token as a Bearer header", async () => {
    const p = await open("admin-user");
    const output = p.page.getByTestId("admin-output");

    // No token: the server's 401 JSON is shown as the answer.
    await p.page.getByTestId("admin-clients").click();
    await p.page.waitForFunction(() => document.querySelector('[data-testid="admin-output"]')?.getAttribute("data-status") === "401", null, {
      timeout: WAIT_MS,
    });
    expect(JSON.parse((await output.textContent()) ?? "")).to.include({ code: "UNAUTHORIZED" });
    expect(await p.page.getByTestId("admin-status").textContent()).to.include("401");

    await p.page.getByTestId("admin-token").fill(ADMIN_TOKEN);
    await p.page.getByTestId("admin-clients").click();
    await p.page.waitForFunction(() => document.querySelector('[data-testid="admin-output"]')?.getAttribute("data-status") === "200", null, {
      timeout: WAIT_MS,
    });
    const clients = JSON.parse((await output.textContent()) ?? "") as { clients: string[]; partial: boolean };
    expect(clients.clients).to.include("admin-user");
    expect(clients.partial).to.equal(false);

    await p.page.getByTestId("admin-message").fill("admin says hi");
    await p.page.getByTestId("admin-broadcast").click();
    const item = message(p.page, "admin says hi");
    await item.waitFor({ timeout: WAIT_MS });
    expect(await item.getByTestId("message-from").textContent()).to.equal("http");
    await p.page.waitForFunction(() => /"sent"/.test(document.querySelector('[data-testid="admin-output"]')?.textContent ?? ""), null, { timeout: WAIT_MS });
    const sent = JSON.parse((await output.textContent()) ?? "") as { sent: number; partial: boolean };
    expect(sent.sent).to.be.at.least(1);
    expect(sent.partial).to.equal(false);
    await shot(p.page, "05-admin-panel");
  });

  it("shows markup in a message as text: no element is created and no script runs", async () => {
    const payload = "<img src=x onerror=alert(1)>";
    const [sender, reader] = await twoInstances("xss-sender", "xss-reader");
    await send(sender.page, payload);
    for (const p of [sender, reader]) {
      const text = message(p.page, payload).getByTestId("message-text");
      await text.waitFor({ timeout: WAIT_MS });
      expect(await text.evaluate((el) => el.textContent)).to.equal(payload);
      expect(await p.page.locator('[data-testid="messages"] img').count()).to.equal(0);
    }
    // The same through the admin broadcast (origin http) and as a client id shown in the header.
    await sender.page.getByTestId("admin-token").fill(ADMIN_TOKEN);
    await sender.page.getByTestId("admin-message").fill(`<script>alert(2)</script>${payload}`);
    await sender.page.getByTestId("admin-broadcast").click();
    await message(reader.page, `<script>alert(2)</script>${payload}`).waitFor({ timeout: WAIT_MS });
    expect(await reader.page.locator('[data-testid="messages"] img, [data-testid="messages"] script').count()).to.equal(0);
    expect(sender.dialogs).to.deep.equal([]);
    expect(reader.dialogs).to.deep.equal([]);
    await shot(reader.page, "06-markup-as-text");
  });

  it("is tidy at phone width (390x844)", async () => {
    const p = await open("phone", { width: 390, height: 844 });
    await join(p.page, "team:red");
    await send(p.page, "a message on a phone-width screen", "team:red");
    await message(p.page, "a message on a phone-width screen").waitFor({ timeout: WAIT_MS });
    await p.page.getByTestId("status-button").click();
    await p.page.locator('[data-testid="notification"][data-type="status"]').waitFor({ timeout: WAIT_MS });
    // Nothing wider than the screen: no horizontal scrolling.
    const overflow = await p.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).to.equal(0);
    // The first screen, as a phone shows it on arrival.
    await p.page.evaluate(() => window.scrollTo(0, 0));
    await p.page.screenshot({ path: path.join(SHOTS, "07-phone-390x844.png") });
    await shot(p.page, "08-phone-390x844-full");
  });

  it("after a DRAINING refusal (which socket.io-client does not retry) the page retries with back-off", async () => {
    // The race this covers is too narrow to hit through nginx: the fake, serving the
    // same page, refuses the first two connects as a draining instance would.
    const server = await startDrainingServer({ refusals: 2, instance: "ws9", handler: express().use(express.static(DEMO_DIR)) });
    defer(() => server.close());

    const p = await open("patient", undefined, server.url);
    expect(await p.instance()).to.equal("ws9");
    expect(server.attempts()).to.equal(3);
    const retries = await p.page.getByTestId("system").filter({ hasText: "The instance is draining; reconnecting in" }).allTextContents();
    expect(retries).to.have.length(2);
    // Back-off: the second wait is drawn from a range twice as high as the first.
    const [first, second] = retries.map((t) => Number(/in ([\d.]+)s/.exec(t)![1]));
    expect(first).to.be.within(0.2, 0.5);
    expect(second).to.be.within(0.5, 1.0);
    await shot(p.page, "11-draining-refusal-retried");
  });

  it("the header shows a draining badge while the page's instance drains; the page stays connected", async () => {
    const { t, holder } = await instanceWithHolder("stayer");
    const badge = holder.page.getByTestId("instance-draining");
    expect(await badge.isHidden()).to.equal(true);

    t.app.shutdown.begin("test");
    await badge.waitFor({ state: "visible", timeout: WAIT_MS });
    expect(await badge.textContent()).to.equal("draining");
    expect(await badge.getAttribute("data-instance")).to.equal("ws7");
    expect(await badge.getAttribute("title"))
      .to.include("stays connected")
      .and.include("moves to a live instance");
    expect(await state(holder.page).getAttribute("data-state")).to.equal("connected");
    expect(await holder.instance()).to.equal("ws7");
    await shot(holder.page, "12-draining-badge");
  });

  it('a page opened against a draining instance says the server is draining (not "xhr poll error") and keeps retrying', async () => {
    const { t } = await instanceWithHolder("holder");
    t.app.shutdown.begin("test");
    const p = await load("newcomer", undefined, t.url);
    // The instance's 503s under /socket.io/ (the client script, while the front door
    // refuses it too, then new sessions): two more after it said why show it keeps trying.
    const twoMoreRefusals = new Promise<void>((resolve) => {
      let refused = 0;
      p.page.on("response", (res) => {
        if (res.status() === 503 && new URL(res.url()).pathname.startsWith("/socket.io/") && ++refused === 2) resolve();
      });
    });
    const alert = p.page.getByTestId("connect-error");
    await alert.getByText("The server is draining; retrying…", { exact: true }).waitFor({ timeout: WAIT_MS });
    await twoMoreRefusals;

    expect(await alert.getAttribute("data-kind")).to.equal("retrying");
    expect(await state(p.page).getAttribute("data-state")).to.equal("reconnecting");
    // The feed says it too; socket.io-client's words appear nowhere.
    expect(await p.page.getByTestId("system").filter({ hasText: "The server is draining" }).count()).to.be.at.least(1);
    expect(await p.page.locator("body").textContent()).to.not.include("xhr poll error");
    expect(await p.instance()).to.equal("–");
    await shot(p.page, "13-draining-instance-refuses");
  });

  it("names each HTTP refusal of a new session (draining, full, rate limited, nginx's 429) and falls back to the status or the transport's words", async () => {
    const cases: { status: number; body?: unknown; says: string }[] = [
      { status: 503, body: { error: "server is draining", code: "DRAINING" }, says: "The server is draining; retrying…" },
      { status: 503, body: { error: "instance is full (1 connections): try another", code: "OVER_CAPACITY" }, says: "The server is full; retrying…" },
      { status: 429, body: { error: "rate limited: try again in 9 s", code: "RATE_LIMITED" }, says: "Too many connections from this address; retrying…" },
      {
        status: 429,
        body: { error: "too many connections or new sessions from this address", code: "TOO_MANY_REQUESTS" },
        says: "Too many connections from this address; retrying…",
      },
      { status: 502, body: "<html>502 Bad Gateway</html>", says: "Connection failed (HTTP 502); retrying…" },
      // No answer at all: no status to read, as with a failed WebSocket.
      { status: 0, says: "Connection failed (xhr poll error); retrying…" },
    ];
    const p = await open("refused-many-ways");
    let current = cases[0]!;
    // Engine.IO's requests (not the client script under /socket.io/) get the case's answer.
    await p.page.route(
      (url) => url.searchParams.has("EIO"),
      (route) =>
        current.status === 0
          ? route.abort("connectionrefused")
          : route.fulfill({
              status: current.status,
              contentType: "application/json",
              body: typeof current.body === "string" ? current.body : JSON.stringify(current.body),
            }),
    );
    for (const c of cases) {
      current = c;
      await p.page.getByTestId("connect-button").click();
      await p.page.getByTestId("connect-error").getByText(c.says, { exact: true }).waitFor({ timeout: WAIT_MS });
      expect(await state(p.page).getAttribute("data-state"), c.says).to.equal("reconnecting");
    }
  });

  it("Disconnect, then Connect: the page gets what it missed replayed, and warns when the history no longer has it", async () => {
    // Alone (no Redis): the history is a ring of 3 in memory.
    const t = await startApp({ INSTANCE_ID: "ws8", HISTORY_SIZE: "3" });
    defer(() => t.close());
    const publish = async (text: string) => {
      const res = await fetch(`${t.url}/broadcast-to-all`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ message: text }),
      });
      expect(res.status, `publish ${text}`).to.equal(200);
    };
    const p = await open("resumer", undefined, t.url);
    const recovery = p.page.getByTestId("recovery");
    await publish("seen live");
    await message(p.page, "seen live").waitFor({ timeout: WAIT_MS });
    // A first connection sends no place, so it has nothing to say about recovery.
    expect(await recovery.count()).to.equal(0);

    const reconnectAfter = async (missed: string[]) => {
      await p.page.getByTestId("disconnect-button").click();
      await p.page.locator('[data-testid="conn-state"][data-state="disconnected"]').waitFor({ timeout: WAIT_MS });
      for (const text of missed) await publish(text);
      const before = await recovery.count();
      await p.page.getByTestId("connect-button").click();
      await connected(p.page);
      await recovery.nth(before).waitFor({ timeout: WAIT_MS });
      return recovery.nth(before);
    };

    const complete = await reconnectAfter(["missed 1", "missed 2"]);
    expect(await complete.getAttribute("data-recovered")).to.equal("true");
    expect(await complete.getAttribute("data-replayed")).to.equal("2");
    expect(await complete.textContent()).to.include("Reconnected to ws8: 2 missed message(s) replayed");
    for (const text of ["missed 1", "missed 2"]) await message(p.page, text).waitFor({ timeout: WAIT_MS });
    // Replayed after the line that announced them, each once; what was seen live is not repeated.
    const feed = await p.page
      .locator('[data-testid="messages"] > li')
      .evaluateAll((els) =>
        els
          .map((e) => (e.getAttribute("data-testid") === "recovery" ? "recovery" : (e.querySelector('[data-testid="message-text"]')?.textContent ?? "")))
          .filter(Boolean),
      );
    expect(feed.slice(feed.indexOf("recovery"))).to.deep.equal(["recovery", "missed 1", "missed 2"]);
    expect(feed.filter((x) => x === "seen live")).to.have.length(1);

    // Five more while away: the ring of 3 no longer holds the page's place.
    const partial = await reconnectAfter(["gone 1", "gone 2", "gone 3", "gone 4", "gone 5"]);
    expect(await partial.getAttribute("data-recovered")).to.equal("false");
    expect(await partial.textContent()).to.include("Reconnected to ws8: some messages may be missing");
    expect(await partial.getAttribute("class")).to.include("warn");
    await shot(p.page, "15-recovery-partial");
  });

  // Last: it takes an instance down (and brings it back for whatever runs after).
  it("after its instance drains and is force-closed at the 1 s deadline, the page reconnects to another instance and re-joins its rooms", async () => {
    const [mover, peer] = await twoInstances("mover", "peer");
    const from = await mover.instance();
    const index = Number(from.slice(2)) - 1;
    await join(mover.page, "blue");
    await join(peer.page, "blue");
    defer(() => stack!.restartInstance(index));

    stack!.instances[index]!.signal("SIGTERM");
    await mover.page.locator('[data-testid="notification"][data-type="draining"]').waitFor({ timeout: WAIT_MS });
    expect(await mover.page.getByTestId("instance-draining").getAttribute("data-instance")).to.equal(from);
    await shot(mover.page, "09-draining");

    const to = await connected(mover.page, from);
    expect(to).to.not.equal(from);
    expect(await state(mover.page).getAttribute("data-state")).to.equal("connected");
    expect(await mover.clientId()).to.equal("mover");
    // The badge went with the instance it named.
    expect(await mover.page.getByTestId("instance-draining").isHidden()).to.equal(true);
    // It said where it landed.
    await mover.page
      .getByTestId("system")
      .filter({ hasText: `now on ${to} (was ${from})` })
      .waitFor({ timeout: WAIT_MS });
    // The instance it left is gone for good.
    expect((await stack!.instances[index]!.exited).code).to.equal(0);

    // Its room came along: a room message from the peer reaches it on the new instance.
    await mover.page.getByTestId("system").filter({ hasText: "Re-joined #blue" }).waitFor({ timeout: WAIT_MS });
    await send(peer.page, "blue after the move", "blue");
    await message(mover.page, "blue after the move").waitFor({ timeout: WAIT_MS });
    await shot(mover.page, "10-reconnected-elsewhere");
  });

  it("a page moved by a rolling restart receives every message", async function () {
    // Its own stack: all four instances are replaced. Bounded: starting a stack and
    // four restarts (drain up to the 1 s deadline, then a fresh start) on a busy machine.
    this.timeout(300_000);
    const roll = await startStack({ env: { PERIODIC_INTERVAL_SEC: "0", FORCED_SHUTDOWN_AFTER_SEC: "1", RATE_LIMIT_MESSAGES_PER_SEC: "0" } });
    defer(() => roll.stop({ graceMs: 5_000 }));

    // On ws1 if nginx offers it within a few tries: replaced first, the page then
    // lands on an instance still to be replaced, and moves more than once.
    let p = await open("roller-0", undefined, roll.url);
    for (let i = 1; i <= 8 && (await p.instance()) !== "ws1"; i++) {
      await p.context.close();
      pages.splice(pages.indexOf(p), 1);
      // Another id: the one just closed may still be held for a moment.
      p = await open(`roller-${i}`, undefined, roll.url);
    }
    const first = await p.instance();
    // What reached the page on the wire (WebSocket frames, polling answers), to show a failure's offsets.
    const wire: string[] = [];
    p.page.on("websocket", (ws) => ws.on("framereceived", (f) => wire.push(`${ws.url()} ${String(f.payload)}`)));
    p.page.on("response", (res) => {
      if (res.url().includes("EIO=") && res.request().method() === "GET")
        void res.text().then(
          (t) => wire.push(`${res.url()} ${t}`),
          () => undefined,
        );
    });
    // In a room too: after a move the server joins it from the page's auth before the
    // replay, so the room's messages published meanwhile are replayed as well.
    await join(p.page, "rollers");
    // Everything the feed shows, as it is appended (the feed itself keeps only the last 400 items).
    await p.page.evaluate(() => {
      const w = window as unknown as { feedLog: string[] };
      w.feedLog = [];
      new MutationObserver((records) => {
        for (const r of records) {
          for (const node of r.addedNodes) {
            if (!(node instanceof HTMLElement)) continue;
            const kind = node.dataset.testid;
            if (kind === "message") w.feedLog.push(`message ${node.querySelector('[data-testid="message-text"]')?.textContent ?? ""}`);
            else if (kind === "recovery") w.feedLog.push(`recovery ${node.dataset.recovered} ${node.dataset.replayed} ${node.dataset.instance}`);
          }
        }
      }).observe(document.querySelector('[data-testid="messages"]')!, { childList: true });
    });
    const feedLog = () => p.page.evaluate(() => (window as unknown as { feedLog: string[] }).feedLog);

    // Numbered messages, one in flight at a time; only a 200 means published.
    const run = `roll-${Date.now().toString(36)}`;
    const post = async (text: string, room?: string): Promise<string> => {
      try {
        const res = await fetch(`${roll.url}/broadcast-to-all`, {
          method: "POST",
          headers: { "Content-Type": "application/json", authorization: `Bearer ${roll.adminToken}` },
          body: JSON.stringify(room ? { message: text, room } : { message: text }),
          signal: AbortSignal.timeout(15_000),
        });
        const body = await res.text();
        return res.status === 200 ? "ok" : `${res.status} ${body.slice(0, 200)}`;
      } catch (err) {
        return (err as Error).message;
      }
    };
    const published: number[] = [];
    const refused = new Map<number, string>();
    let publishing = true;
    const publisher = (async () => {
      for (let n = 1; publishing; n++) {
        // Every third one to the page's room.
        const answer = await post(`${run} ${n}`, n % 3 === 0 ? "rollers" : undefined);
        if (answer === "ok") published.push(n);
        else refused.set(n, answer);
        await sleep(20);
      }
    })();

    try {
      await roll.rollingRestart();
    } finally {
      publishing = false;
      await publisher;
    }
    // The last word: once the page has it, it has everything published before it.
    const sentinel = `${run} end`;
    let answer = "";
    for (let i = 0; i < 20 && (answer = await post(sentinel)) !== "ok"; i++) await sleep(500);
    expect(answer, "the sentinel publish").to.equal("ok");
    await p.page.waitForFunction((t) => (window as unknown as { feedLog: string[] }).feedLog.includes(`message ${t}`), sentinel, { timeout: 60_000 });
    await connected(p.page);

    const log = await feedLog();
    const numbers = log.flatMap((line) =>
      line.startsWith(`message ${run} `) && line !== `message ${sentinel}` ? [Number(line.slice(`message ${run} `.length))] : [],
    );
    const recoveries = log.filter((line) => line.startsWith("recovery "));
    const context = `on ${first} first; ${published.length} published, ${refused.size} refused (${[...refused]
      .slice(0, 5)
      .map(([n, why]) => `${n}: ${why}`)
      .join("; ")}); recoveries: ${recoveries.join(", ")}`;
    expect(published.length, context).to.be.greaterThan(0);
    // In order and each once: strictly increasing.
    const disorder = numbers.flatMap((n, i) => (i > 0 && n <= numbers[i - 1]! ? [`${numbers[i - 1]} then ${n}`] : []));
    // On failure, what carried them (with their offsets): the packets of each session
    // (polling answers hold several, split by \x1e) that name them, and its welcomes.
    const onTheWire = () => {
      const wanted = new Set(disorder.map((d) => `"${run} ${d.split(" ")[2]}"`));
      return wire.flatMap((w) => {
        const [url = "", ...rest] = w.split(" ");
        const sid = new URL(url).searchParams.get("sid") ?? "?";
        return rest
          .join(" ")
          .split("\x1e")
          .filter((packet) => packet.includes('"welcome"') || [...wanted].some((t) => packet.includes(t)))
          .map((packet) => `${sid}: ${packet}`);
      });
    };
    expect(disorder, `out of order or twice; ${context}${disorder.length > 0 ? `; on the wire:\n${onTheWire().join("\n")}` : ""}`).to.deep.equal([]);
    // Every publish answered 200 is there (one refused may still have been delivered: never twice, though).
    const got = new Set(numbers);
    expect(
      published.filter((n) => !got.has(n)),
      `missing; ${context}`,
    ).to.deep.equal([]);
    expect(
      numbers.filter((n) => !published.includes(n) && !refused.has(n)),
      `never published; ${context}`,
    ).to.deep.equal([]);
    // The sentinel came last.
    expect(log.filter((line) => line.startsWith("message ")).at(-1)).to.equal(`message ${sentinel}`);
    // Every instance is new, so the page moved at least once: it said it recovered, and never that something may be missing.
    expect(
      recoveries.filter((r) => r.startsWith("recovery true ")),
      context,
    ).to.not.be.empty;
    expect(
      recoveries.filter((r) => r.startsWith("recovery false ")),
      context,
    ).to.deep.equal([]);
    await p.page.getByTestId("recovery").last().scrollIntoViewIfNeeded();
    await shot(p.page, "14-rolling-restart-recovered");
  });
});

suite(`demo page in headless Chromium, with client tokens${hasChromium ? "" : ` (SKIPPED: ${CHROMIUM} is missing)`}`, function () {
  this.timeout(60_000);
  const defer = useCleanup();
  const SECRET = "browser-secret-of-at-least-32-bytes-01234";
  let t: TestApp | undefined;
  let browser: Browser | undefined;

  before(async function () {
    this.timeout(60_000);
    await mkdir(SHOTS, { recursive: true });
    t = await startApp({ AUTH_JWT_SECRET: SECRET, TOKEN_REFRESH_AHEAD_SEC: "1", TOKEN_EXPIRY_GRACE_SEC: "0.5" });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
  });
  after(async function () {
    this.timeout(30_000);
    await browser?.close().catch(() => undefined);
    await t?.close();
  });

  const tab = async (token: string): Promise<{ page: Page; errors: string[] }> => {
    const context = await browser!.newContext({ viewport: { width: 1280, height: 860 } });
    defer(() => context.close());
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${t!.url}/?token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => (document.querySelector('[data-testid="conn-state"]') as HTMLElement | null)?.dataset.state === "connected", null, {
      timeout: WAIT_MS,
    });
    return { page, errors };
  };

  it("two tabs of one user both connect; a permitted join works, a forbidden one says why", async () => {
    const { signJwt, hmacKey } = await import("./helpers/jwt.js");
    const token = await signJwt(hmacKey(SECRET), "HS256", { sub: "tess", wbs: { read: ["team:*"], send: ["team:*"] } });
    const [one, two] = [await tab(token), await tab(token)];
    for (const p of [one, two]) expect(await p.page.getByTestId("user").textContent()).to.equal("tess");
    expect(await one.page.getByTestId("client-id").textContent(), "a connection id a tab").to.not.equal(await two.page.getByTestId("client-id").textContent());

    await one.page.getByTestId("room-input").fill("team:blue");
    await one.page.getByTestId("room-input").press("Enter");
    await one.page.locator('[data-testid="room-chip"][data-room="team:blue"]').waitFor({ timeout: WAIT_MS });
    await one.page.getByTestId("room-input").fill("secret");
    await one.page.getByTestId("room-input").press("Enter");
    await one.page.getByTestId("room-error").getByText("this token may not read room secret").waitFor({ timeout: WAIT_MS });

    // The personal room reaches both tabs.
    await fetch(`${t!.url}/broadcast-to-all`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message: "for both of tess's tabs", room: "user:tess" }),
    });
    for (const p of [one, two]) {
      await p.page
        .getByTestId("message")
        .filter({ has: p.page.getByTestId("message-text").getByText("for both of tess's tabs", { exact: true }) })
        .waitFor({ timeout: WAIT_MS });
    }
    await one.page.screenshot({ path: path.join(SHOTS, "20-tokens-two-tabs.png"), fullPage: true });
    expect([...one.errors, ...two.errors], "page errors").to.deep.equal([]);
  });

  it("a tab refreshes its token in-band when a fresh one is pasted before the deadline", async () => {
    const { signJwt, hmacKey } = await import("./helpers/jwt.js");
    const now = Math.floor(Date.now() / 1000);
    const p = await tab(await signJwt(hmacKey(SECRET), "HS256", { sub: "uma", exp: now + 3 }));
    const id = await p.page.getByTestId("client-id").textContent();
    // Pasted (a change event once the field loses focus): sent at once, or on the `expiring` notice.
    const field = p.page.getByTestId("client-token-input");
    await field.fill(await signJwt(hmacKey(SECRET), "HS256", { sub: "uma", exp: now + 120 }));
    await field.blur();
    await p.page.getByTestId("system").getByText("Token refreshed").first().waitFor({ timeout: WAIT_MS });
    // Past the first token's deadline and grace: the same connection.
    await p.page.waitForFunction((deadline) => Date.now() > deadline, (now + 4) * 1000, { timeout: WAIT_MS });
    expect(await p.page.getByTestId("client-id").textContent()).to.equal(id);
    expect(await p.page.getByTestId("system").getByText("The server closes this connection").count()).to.equal(0);
    expect(p.errors).to.deep.equal([]);
  });
});
