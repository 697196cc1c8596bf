// The demo page of ws-broadcast-service: plain browser JavaScript, no build
// step. The Socket.IO client comes from the server (/socket.io/socket.io.min.js).
//
// Everything that arrives from the network is rendered with textContent (never
// innerHTML), so a message such as <img src=x onerror=...> shows as text.
//
// Recovery, as the server expects of its clients:
// - "transport close" (an instance closed us at its drain deadline) and
//   transport-level errors: socket.io-client reconnects by itself, through the
//   same origin (nginx), which hands the new session to a live instance.
// - a `connect_error` with data.code DRAINING (or RATE_LIMITED) is a
//   namespace-middleware refusal, which socket.io-client does not retry: we
//   retry with back-off and jitter.
// - a new session refused over HTTP (503 DRAINING or OVER_CAPACITY, 429
//   RATE_LIMITED or nginx's TOO_MANY_REQUESTS) reaches us as a transport error
//   ("xhr poll error") that socket.io-client retries itself; we say why.
//
// No message lost across reconnects: the page keeps its place in the history
// (the epoch and the last offset, from every welcome, message and status
// notification) and sends it, with its rooms, in the handshake `auth`, a
// function that socket.io-client calls on every (re)connection. Wherever the
// reconnect lands, that instance joins the rooms and replays what was missed
// before going live; the feed says so, or warns when something may be missing.
//
// Client tokens, both paths: the `auth` function reads the token field on
// every (re)connection, so a reconnect after TOKEN_EXPIRED sends whatever
// token is there now; and on `expiring` the page sends the field's token
// in-band (`refresh`), keeping the connection (paste a fresh one in time).

(() => {
  const ACK_TIMEOUT_MS = 5000;
  const MAX_FEED_ITEMS = 400;
  const RETRY_BASE_MS = 500;
  const RETRY_MAX_MS = 10_000;
  // A clientId we held may still be registered by the instance we left, for a moment.
  const DUPLICATE_RETRIES = 8;
  /** Why a refused connection is being retried, in words, by the refusal's code. */
  const REFUSALS = {
    DRAINING: "The server is draining",
    OVER_CAPACITY: "The server is full",
    RATE_LIMITED: "Too many connections from this address",
    TOO_MANY_REQUESTS: "Too many connections from this address",
  };
  /** The Socket.IO client, served by the instance (index.html loads it first). */
  const CLIENT_SCRIPT = "/socket.io/socket.io.min.js";

  /** @param {string} id */
  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
  const ui = {
    state: $("conn-state"),
    transport: $("transport"),
    instance: $("instance"),
    draining: $("instance-draining"),
    clientId: $("client-id"),
    user: $("user"),
    tokenInput: /** @type {HTMLInputElement} */ ($("client-token-input")),
    connectForm: /** @type {HTMLFormElement} */ ($("connect-form")),
    clientIdInput: /** @type {HTMLInputElement} */ ($("client-id-input")),
    disconnect: $("disconnect-button"),
    connectError: $("connect-error"),
    statusButton: $("status-button"),
    feed: $("messages"),
    messageForm: /** @type {HTMLFormElement} */ ($("message-form")),
    messageInput: /** @type {HTMLInputElement} */ ($("message-input")),
    target: /** @type {HTMLSelectElement} */ ($("target")),
    sendError: $("send-error"),
    roomForm: /** @type {HTMLFormElement} */ ($("room-form")),
    roomInput: /** @type {HTMLInputElement} */ ($("room-input")),
    leave: $("leave-button"),
    roomError: $("room-error"),
    rooms: $("rooms"),
    roomsEmpty: $("rooms-empty"),
    adminToken: /** @type {HTMLInputElement} */ ($("admin-token")),
    adminClients: $("admin-clients"),
    adminForm: /** @type {HTMLFormElement} */ ($("admin-broadcast-form")),
    adminMessage: /** @type {HTMLInputElement} */ ($("admin-message")),
    adminRoom: /** @type {HTMLInputElement} */ ($("admin-room")),
    adminStatus: $("admin-status"),
    adminOutput: $("admin-output"),
  };

  /** @type {any} the current Socket.IO socket */
  let socket;
  /** Instance of the last welcome, to tell the user where a reconnect landed. */
  let lastInstance = "";
  let myClientId = "";
  /** Rooms we joined: sent in `auth` on every (re)connect (the server joins them before the replay), and re-joined after it. */
  const joined = new Set();
  /**
   * Our place in the broadcast history: the epoch of the last welcome and the
   * offset of the last broadcast seen (or the welcome's starting offset). Kept
   * across reconnects and across Disconnect/Connect: the feed keeps its
   * messages, so what was missed meanwhile is replayed into it.
   */
  const place = { epoch: "", offset: "", sent: false };
  let retryTimer = 0;
  let retryAttempt = 0;
  let connectedOnce = false;
  /** The token the connection holds now (sent in `auth` or by `refresh`). */
  let sentToken = "";

  /** Sends the token field's token in-band, when it is a new one. */
  async function refreshToken() {
    const token = ui.tokenInput.value.trim();
    if (!socket?.connected || token === "" || token === sentToken) return false;
    const ack = await request("refresh", token);
    if (!ack.ok) {
      system(`Token not refreshed: ${str(ack.error)}`, "error");
      return false;
    }
    sentToken = token;
    system(`Token refreshed${ack.expiresAt ? `; it expires at ${clock(ack.expiresAt)}` : ""}`, "ok");
    return true;
  }

  // ---------------------------------------------------------------- rendering

  /**
   * A new element with text content and attributes (values set as attributes, never parsed as HTML).
   * @param {string} tag
   * @param {{ className?: string, text?: string, attrs?: Record<string, string> }} [opts]
   * @param {Node[]} [children]
   */
  function h(tag, opts = {}, children = []) {
    const node = document.createElement(tag);
    if (opts.className) node.className = opts.className;
    if (opts.text !== undefined) node.textContent = opts.text;
    for (const [k, v] of Object.entries(opts.attrs ?? {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  /** @param {unknown} iso */
  function clock(iso) {
    const d = typeof iso === "string" ? new Date(iso) : new Date();
    if (Number.isNaN(d.getTime())) return "--:--:--";
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }

  /** @param {unknown} v */
  const str = (v) => (typeof v === "string" ? v : String(v ?? ""));

  /** Appends to the feed, keeps it bounded, and follows the bottom if the reader was there. */
  function appendToFeed(/** @type {HTMLElement} */ item) {
    const feed = ui.feed;
    const atBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
    feed.append(item);
    while (feed.childElementCount > MAX_FEED_ITEMS) feed.firstElementChild?.remove();
    if (atBottom) feed.scrollTop = feed.scrollHeight;
  }

  /** A connection event of this page (not from the server). */
  function system(/** @type {string} */ text, kind = "info") {
    appendToFeed(
      h("li", { className: `item system ${kind}`, attrs: { "data-testid": "system", "data-kind": kind } }, [
        h("time", { text: clock(undefined) }),
        h("span", { className: "body", text }),
      ]),
    );
  }

  /**
   * What the welcome of a reconnect says about the history: everything missed
   * was replayed (the replayed broadcasts follow it in the feed), or some may
   * be missing.
   */
  function renderRecovery(/** @type {any} */ w) {
    const recovered = w.recovered === true;
    const n = Number(w.replayed) || 0;
    const text = recovered
      ? `Reconnected to ${str(w.instance)}: ${n > 0 ? `${n} missed message(s) replayed` : "nothing missed"}`
      : `Reconnected to ${str(w.instance)}: some messages may be missing (history trimmed or restarted)${n > 0 ? `; ${n} replayed` : ""}`;
    appendToFeed(
      h(
        "li",
        {
          className: `item system recovery ${recovered ? "ok" : "warn"}`,
          attrs: { "data-testid": "recovery", "data-recovered": String(recovered), "data-replayed": String(n), "data-instance": str(w.instance) },
        },
        [h("time", { text: clock(undefined) }), h("span", { className: "body", text })],
      ),
    );
  }

  /** A chat message: { text, from, instance, room?, origin, at }. */
  function renderMessage(/** @type {any} */ m) {
    const mine = m.from === myClientId;
    const meta = h("div", { className: "meta" }, [
      h("time", { text: clock(m.at), attrs: { datetime: str(m.at) } }),
      h("span", { className: "from", text: str(m.from), attrs: { "data-testid": "message-from" } }),
      h("span", { className: "via", text: `via ${str(m.instance)}`, attrs: { "data-testid": "message-instance" } }),
    ]);
    if (m.room !== undefined) meta.append(h("span", { className: "room-tag", text: `#${str(m.room)}`, attrs: { "data-testid": "message-room" } }));
    // Where it came in, when not the usual Socket.IO (and not already said by the sender's name).
    const origin = m.origin === "ws" ? "/ws" : str(m.origin);
    if (m.origin && m.origin !== "socket.io" && origin !== m.from) meta.append(h("span", { className: "origin", text: origin }));
    const attrs = { "data-testid": "message", "data-from": str(m.from), "data-instance": str(m.instance) };
    if (m.room !== undefined) attrs["data-room"] = str(m.room);
    appendToFeed(
      h("li", { className: `item msg${mine ? " mine" : ""}${m.origin === "http" ? " admin" : ""}`, attrs }, [
        meta,
        h("p", { className: "text", text: str(m.text), attrs: { "data-testid": "message-text" } }),
      ]),
    );
  }

  /** A notification: status, periodic or draining; set apart from chat. */
  function renderNotification(/** @type {any} */ n) {
    const type = str(n?.type);
    const attrs = { "data-testid": "notification", "data-type": type };
    /** @type {Node[]} */
    const body = [];
    if (type === "status") {
      const instances = Array.isArray(n.instances) ? n.instances : [];
      body.push(
        h("span", {
          className: "body",
          text: `Status check by ${str(n.requestedBy)}: ${str(n.clients)} client(s) on ${instances.length} instance(s)${n.partial ? " (partial: an instance did not answer)" : ""}`,
        }),
        h(
          "ul",
          { className: "instances" },
          instances.map((/** @type {any} */ i) =>
            h("li", {
              text: `${str(i.id)}: ${str(i.clients)} client(s)${i.draining ? ", draining" : ""}`,
              attrs: { "data-testid": "status-instance", "data-instance": str(i.id), ...(i.draining ? { "data-draining": "true" } : {}) },
            }),
          ),
        ),
      );
    } else if (type === "periodic") {
      body.push(h("span", { className: "body", text: `Periodic notification from ${str(n.instance)} (every ${str(n.intervalSec)} s)` }));
    } else if (type === "draining") {
      body.push(
        h("span", {
          className: "body",
          text: `${str(n.instance)} is draining. You stay connected; when it closes, the page moves to a live instance.`,
        }),
      );
    } else {
      body.push(h("span", { className: "body", text: JSON.stringify(n) }));
    }
    appendToFeed(
      h("li", { className: `item notice ${type}`, attrs }, [
        h("time", { text: clock(n?.at) }),
        h("span", { className: "kind", text: type || "notice" }),
        ...body,
      ]),
    );
  }

  /**
   * @param {"idle"|"connecting"|"connected"|"reconnecting"|"disconnected"|"refused"} state
   * @param {string} [label]
   */
  function setState(state, label) {
    ui.state.dataset.state = state;
    ui.state.textContent = label ?? state;
    document.body.dataset.state = state;
    if (state !== "connected") setTransport("");
  }

  function setTransport(/** @type {string} */ name) {
    ui.transport.textContent = name || "–";
    ui.transport.dataset.transport = name;
  }

  function showError(/** @type {HTMLElement} */ where, /** @type {string} */ text) {
    where.textContent = text;
    where.hidden = text === "";
    delete where.dataset.kind;
  }

  /** A refusal we are retrying: shown like an error, in the colour of a warning. */
  function showRetrying(/** @type {string} */ text) {
    // Unchanged text is left alone, so the alert is not announced again on every attempt.
    if (ui.connectError.hidden || ui.connectError.textContent !== text) showError(ui.connectError, text);
    ui.connectError.dataset.kind = "retrying";
  }

  /** The header's draining badge: shown for the instance we are on, cleared with "". */
  function showDraining(/** @type {string} */ instance) {
    ui.draining.hidden = instance === "";
    ui.draining.dataset.instance = instance;
    ui.draining.title = instance ? `${instance} is draining. This page stays connected; when ${instance} closes, it moves to a live instance.` : "";
  }

  function renderRooms() {
    ui.rooms.replaceChildren(
      ...[...joined].sort().map((room) => {
        const leave = h("button", { className: "chip-x", text: "×", attrs: { type: "button", "aria-label": `leave ${room}`, title: `leave ${room}` } });
        leave.addEventListener("click", () => void leaveRoom(room));
        return h("li", { className: "chip", attrs: { "data-testid": "room-chip", "data-room": room } }, [h("span", { text: `#${room}` }), leave]);
      }),
    );
    ui.roomsEmpty.hidden = joined.size > 0;
    // The "send to" choices follow the joined rooms; keep the selection if it still exists.
    const selected = ui.target.value;
    ui.target.replaceChildren(
      h("option", { text: "everyone", attrs: { value: "" } }),
      ...[...joined].sort().map((room) => h("option", { text: `#${room}`, attrs: { value: room } })),
    );
    ui.target.value = joined.has(selected) ? selected : "";
  }

  // --------------------------------------------------------------- connection

  /** Emits with an ack and a time limit; always resolves to { ok, ... }. */
  async function request(/** @type {string} */ event, /** @type {unknown[]} */ ...args) {
    if (!socket?.connected) return { ok: false, error: "not connected" };
    try {
      return await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, ...args);
    } catch {
      return { ok: false, error: `no answer from the server within ${ACK_TIMEOUT_MS / 1000} s` };
    }
  }

  /** The code of a refusal's JSON body (`{ error, code }`), or "". */
  function bodyCode(/** @type {unknown} */ body) {
    try {
      const code = JSON.parse(str(body)).code;
      return typeof code === "string" ? code : "";
    } catch {
      return ""; // not JSON: a proxy's error page, or no body at all
    }
  }

  /**
   * Why a request was refused, in words: by the service's (or nginx's) code,
   * else by its HTTP status, else `what` with `detail` (there is no status to read).
   */
  function refusalReason(/** @type {string} */ code, /** @type {number} */ status, /** @type {string} */ what, /** @type {string} */ detail) {
    const known = REFUSALS[/** @type {keyof typeof REFUSALS} */ (code)] ?? (status === 429 ? REFUSALS.TOO_MANY_REQUESTS : undefined);
    return known ?? `${what} (${status > 0 ? `HTTP ${status}` : detail})`;
  }

  /**
   * Why a connection attempt that socket.io-client retries itself failed. A new
   * session refused over HTTP fails the polling request, which socket.io-client
   * reports as "xhr poll error" with the status in err.description and the
   * XMLHttpRequest (its JSON body) in err.context; a failed WebSocket carries
   * neither, and keeps socket.io-client's words.
   */
  function failureReason(/** @type {Error & { description?: unknown, context?: any }} */ err) {
    const status = typeof err.description === "number" ? err.description : 0;
    return refusalReason(bodyCode(err.context?.responseText), status, "Connection failed", err.message);
  }

  /**
   * Whether a notification says that the instance we are on is draining: its
   * `draining` notification, or a status check that lists it as draining. The
   * header keeps saying so, where the feed line would scroll away.
   */
  function drainsOurInstance(/** @type {any} */ n) {
    if (n?.type === "draining") return n.instance === lastInstance;
    const instances = n?.type === "status" && Array.isArray(n.instances) ? n.instances : [];
    return instances.some((/** @type {any} */ i) => i?.id === lastInstance && i.draining === true);
  }

  /** Keeps an offset (a message's, a status notification's, a welcome's); a missing or empty one is ignored. */
  function seen(/** @type {unknown} */ offset) {
    if (typeof offset === "string" && offset !== "") place.offset = offset;
  }

  /**
   * The handshake `auth`, built afresh for every (re)connection attempt:
   * socket.io-client's own reconnects, our back-off retries and a new Connect.
   * @param {string} clientId
   */
  function handshakeAuth(clientId) {
    /** @type {Record<string, unknown>} */
    const auth = clientId ? { clientId } : {};
    const token = ui.tokenInput.value.trim();
    if (token) auth.token = token;
    sentToken = token;
    // The welcome answering this attempt tells whether the replay was complete.
    place.sent = place.offset !== "" && place.epoch !== "";
    if (place.sent) {
      auth.offset = place.offset;
      auth.epoch = place.epoch;
    }
    auth.rooms = [...joined];
    return auth;
  }

  /** Our own retry (for refusals socket.io-client does not retry): exponential back-off with jitter. */
  function scheduleRetry(/** @type {string} */ why, retry = () => socket?.connect()) {
    clearTimeout(retryTimer);
    const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** retryAttempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    retryAttempt++;
    setState("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)}s…`);
    system(`${why}; reconnecting in ${(delay / 1000).toFixed(1)}s…`, "warn");
    retryTimer = window.setTimeout(() => {
      setState("reconnecting", "reconnecting…");
      retry();
    }, delay);
  }

  /**
   * Loads the Socket.IO client again, then connects. An instance that refuses
   * new sessions (draining, full) may refuse the client script too (it is
   * served under /socket.io/), and a script element cannot tell why: ask with
   * fetch, say so, and try again with back-off.
   */
  async function loadClient() {
    let reason = "The Socket.IO client did not load";
    try {
      const res = await fetch(CLIENT_SCRIPT, { cache: "no-store" });
      if (!res.ok) reason = refusalReason(bodyCode(await res.text()), res.status, "Could not load the Socket.IO client", "");
    } catch {
      reason = "Could not load the Socket.IO client (no answer from the server)";
    }
    showRetrying(`${reason}; retrying…`);
    scheduleRetry(reason, () => {
      const script = h("script", { attrs: { src: CLIENT_SCRIPT } });
      script.addEventListener("load", () => connect());
      script.addEventListener("error", () => void loadClient());
      document.head.append(script);
    });
  }

  function connect() {
    if (typeof io !== "function") return void loadClient();
    clearTimeout(retryTimer);
    retryAttempt = 0;
    connectedOnce = false;
    if (socket) {
      socket.off();
      socket.io.off();
      socket.disconnect();
    }
    showError(ui.connectError, "");
    const clientId = ui.clientIdInput.value.trim();
    // forceNew: a fresh Manager (and session) each time the user connects.
    // auth as a function: called on every (re)connection, so each one sends where we are now.
    const s = io({
      auth: (/** @type {(auth: object) => void} */ cb) => cb(handshakeAuth(clientId)),
      forceNew: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    socket = s;
    setState("connecting", "connecting…");
    /** What the feed last said about the current outage; "" while connected. */
    let announced = "";

    s.on("connect", () => {
      retryAttempt = 0;
      announced = "";
      connectedOnce = true;
      showError(ui.connectError, "");
      setState("connected");
      // Each (re)connect has a new Engine.IO socket: follow its upgrade to WebSocket.
      const engine = s.io.engine;
      setTransport(engine.transport.name);
      engine.once("upgrade", (/** @type {any} */ transport) => {
        if (s.connected) setTransport(transport.name);
      });
    });

    s.on("welcome", (/** @type {any} */ w) => {
      myClientId = str(w.clientId);
      ui.clientId.textContent = myClientId;
      ui.user.textContent = str(w.user) || "–";
      ui.instance.textContent = str(w.instance);
      ui.instance.dataset.instance = str(w.instance);
      // A welcome is from a live instance (a draining one admits nobody).
      showDraining("");
      if (lastInstance && lastInstance !== w.instance) {
        system(`Reconnected: now on ${str(w.instance)} (was ${lastInstance}) as ${myClientId}`, "ok");
        ui.instance.classList.remove("moved");
        void ui.instance.offsetWidth; // restart the highlight animation
        ui.instance.classList.add("moved");
      } else {
        system(`Connected to ${str(w.instance)} as ${myClientId}`, "ok");
      }
      lastInstance = str(w.instance);
      // Only a connection that asked to resume has something to say about it
      // (the first one sends no offset, and is told recovered: false).
      if (place.sent) renderRecovery(w);
      place.sent = false;
      if (typeof w.epoch === "string") place.epoch = w.epoch;
      seen(w.offset);
      // After the welcome (and the replay that follows it), so the feed tells the story in order.
      void rejoinRooms();
    });

    s.on("message", (/** @type {any} */ m) => {
      seen(m?.offset);
      renderMessage(m);
    });
    s.on("notification", (/** @type {any} */ n) => {
      if (n?.type === "status") seen(n.offset);
      renderNotification(n);
      if (lastInstance && drainsOurInstance(n)) showDraining(lastInstance);
    });

    s.on("expiring", async (/** @type {any} */ n) => {
      if (await refreshToken()) return;
      system(`Your token expires at ${clock(n?.expiresAt)}: paste a fresh one in Client token within ${Math.round(Number(n?.closesInMs) / 1000)} s`, "warn");
    });
    s.on("left", (/** @type {any} */ n) => {
      joined.delete(str(n?.room));
      renderRooms();
      system(`Left #${str(n?.room)}: ${str(n?.error)}`, "warn");
    });
    s.on("closing", (/** @type {any} */ e) => {
      system(`The server closes this connection: ${str(e?.error)} (${str(e?.code)})`, e?.code === "TOKEN_EXPIRED" ? "warn" : "error");
    });

    s.on("disconnect", (/** @type {string} */ reason) => {
      if (reason === "io client disconnect") {
        setState("disconnected");
        system("Disconnected", "info");
        return;
      }
      if (s.active) {
        // socket.io-client reconnects by itself (e.g. "transport close" at a drain deadline).
        setState("reconnecting", "reconnecting…");
        announced = `Disconnected (${reason}); reconnecting…`;
        system(announced, "warn");
        return;
      }
      // "io server disconnect": the server let us go on purpose; come back after a pause.
      scheduleRetry(`Disconnected by the server (${reason})`);
    });

    s.on("connect_error", (/** @type {Error & { data?: any }} */ err) => {
      const code = err.data?.code;
      if (s.active) {
        // A transport-level failure (an HTTP refusal of the new session included):
        // socket.io-client is already retrying with its own back-off.
        const text = `${failureReason(err)}; retrying…`;
        setState("reconnecting", "reconnecting…");
        showRetrying(text);
        if (text !== announced) system(text, "warn");
        announced = text;
        return;
      }
      if (code === "DRAINING" || code === "RATE_LIMITED") {
        showRetrying(`${REFUSALS[code]}; retrying…`);
        return scheduleRetry(code === "DRAINING" ? "The instance is draining" : REFUSALS[code]);
      }
      if (code === "DUPLICATE_CLIENT_ID" && connectedOnce && retryAttempt < DUPLICATE_RETRIES) {
        return scheduleRetry("Our client id is still held by the instance we left");
      }
      setState("refused");
      showError(ui.connectError, code ? `${err.message} (${code})` : err.message);
      system(`Connection refused: ${err.message}`, "error");
    });

    s.io.on("reconnect_attempt", (/** @type {number} */ attempt) => {
      setState("reconnecting", `reconnecting… (attempt ${attempt})`);
    });
  }

  /**
   * Joins the remembered rooms again on the (possibly new) instance. The
   * server already joined them from `auth.rooms` (before the replay); this
   * second join is harmless, confirms each one, and covers a server that
   * ignores `auth.rooms`.
   */
  async function rejoinRooms() {
    if (joined.size === 0) return;
    const rooms = [...joined];
    const results = await Promise.all(rooms.map((room) => request("join", room)));
    const failed = rooms.filter((_, i) => !results[i]?.ok);
    for (const room of failed) joined.delete(room);
    if (failed.length > 0) showError(ui.roomError, `could not re-join ${failed.map((r) => `#${r}`).join(", ")}`);
    const ok = rooms.filter((r) => !failed.includes(r));
    if (ok.length > 0) system(`Re-joined ${ok.map((r) => `#${r}`).join(", ")}`, "info");
    renderRooms();
  }

  async function leaveRoom(/** @type {string} */ room) {
    const ack = await request("leave", room);
    if (!ack.ok) return showError(ui.roomError, str(ack.error));
    showError(ui.roomError, "");
    joined.delete(room);
    renderRooms();
  }

  // ------------------------------------------------------------------- admin

  /** Calls the HTTP API and shows the JSON answer, or the error, as text. */
  async function adminCall(/** @type {string} */ method, /** @type {string} */ path, /** @type {unknown} */ body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    const token = ui.adminToken.value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    ui.adminStatus.textContent = `${method} ${path} …`;
    ui.adminOutput.dataset.ok = "";
    try {
      const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
      const text = await res.text();
      let shown = text;
      try {
        shown = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // not JSON (e.g. a proxy's error page): show it as it came
      }
      ui.adminStatus.textContent = `${method} ${path} → ${res.status} ${res.statusText}`;
      ui.adminOutput.textContent = shown;
      ui.adminOutput.dataset.ok = String(res.ok);
      ui.adminOutput.dataset.status = String(res.status);
    } catch (err) {
      ui.adminStatus.textContent = `${method} ${path} failed`;
      ui.adminOutput.textContent = String(/** @type {Error} */ (err).message ?? err);
      ui.adminOutput.dataset.ok = "false";
      ui.adminOutput.dataset.status = "";
    }
  }

  // ------------------------------------------------------------------ wiring

  ui.connectForm.addEventListener("submit", (e) => {
    e.preventDefault();
    connect();
  });

  ui.disconnect.addEventListener("click", () => {
    clearTimeout(retryTimer);
    socket?.disconnect();
  });

  ui.statusButton.addEventListener("click", async () => {
    const ack = await request("status");
    showError(ui.sendError, ack.ok ? "" : `status: ${str(ack.error)}`);
  });

  ui.messageForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = ui.messageInput.value;
    if (text === "") return;
    const room = ui.target.value;
    const ack = await request("message", room ? { text, room } : text);
    if (ack.ok) {
      // Clear only if the user has not typed something new meanwhile.
      if (ui.messageInput.value === text) ui.messageInput.value = "";
      showError(ui.sendError, "");
    } else {
      showError(ui.sendError, `not sent: ${str(ack.error)}`);
    }
  });

  ui.roomForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const room = ui.roomInput.value.trim();
    if (room === "") return;
    const ack = await request("join", room);
    if (!ack.ok) return showError(ui.roomError, str(ack.error));
    showError(ui.roomError, "");
    joined.add(room);
    ui.roomInput.value = "";
    renderRooms();
    ui.target.value = room;
  });

  ui.leave.addEventListener("click", () => {
    const room = ui.roomInput.value.trim() || ui.target.value;
    if (room) void leaveRoom(room);
  });

  ui.adminClients.addEventListener("click", () => void adminCall("GET", "/clients"));

  ui.adminForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const room = ui.adminRoom.value.trim();
    void adminCall("POST", "/broadcast-to-all", room ? { message: ui.adminMessage.value, room } : { message: ui.adminMessage.value });
  });

  // A fresh token pasted while connected is sent at once.
  ui.tokenInput.addEventListener("change", () => void refreshToken());

  // ?clientId=alice and ?token=<jwt> pre-fill the form (handy for links and tests).
  const params = new URLSearchParams(location.search);
  const wanted = params.get("clientId");
  if (wanted) ui.clientIdInput.value = wanted;
  const presetToken = params.get("token");
  if (presetToken) ui.tokenInput.value = presetToken;
  renderRooms();
  connect();
})();
