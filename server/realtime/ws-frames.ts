import type { DomainEvent, ErrorBody, Expiring, LeftRoom, Welcome, WsServerFrame } from "../protocol.js";

/**
 * How /ws renders what the domain sends: text lines in the old services'
 * formats (instance ids in place of PIDs), or JSON frames
 * `{ "type": <event>, "data": <payload> }`.
 */

const clock = (iso: string): string => iso.slice(11, 19);

export function renderWelcome(w: Welcome): string {
  // The leading space is the old service A's, kept for scripts that match on it.
  return ` Welcome! Connected to Instance [${w.instance}] as ${w.clientId} at ${clock(w.at)}. Commands: 'test' or 'ping' for status check.`;
}

// C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const CONTROLS = new RegExp(CONTROL.source, "g");
const SHORT: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * A client's text made safe for one line of a terminal: control characters
 * shown escaped (`\n`, `\u001b`), so no text can forge a line of its own
 * (`[22:00:00] SYSTEM …`) or drive the terminal. Text mode only; JSON and
 * Socket.IO carry the text as sent.
 */
export const visible = (text: string): string =>
  CONTROL.test(text) ? text.replace(CONTROLS, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`) : text;

export const renderEcho = (text: string): string => `Server echo: ${visible(text)}`;

/** One human-readable line per event, for /ws text mode. */
export function renderText(e: DomainEvent): string {
  if (e.event === "message") {
    const m = e.data;
    if (m.origin === "http") return visible(m.text);
    const where = m.room ? ` in #${m.room}` : "";
    return `User ${m.from} (via ${m.instance}) says${where}: ${visible(m.text)}`;
  }
  const n = e.data;
  switch (n.type) {
    case "status": {
      const list = n.instances.map((i) => `${i.id} (${i.clients}${i.draining ? ", draining" : ""})`).join(", ");
      const partial = n.partial ? " [partial: an instance did not answer]" : "";
      return `[${clock(n.at)}] TEST REQUEST from ${n.requestedBy}: System is Active. ${n.clients} client(s) on ${n.instances.length} instance(s): ${list}${partial}`;
    }
    case "periodic":
      return `[${clock(n.at)}] SYSTEM (${n.instance}): Periodic Notification (Every ${n.intervalSec}s)`;
    case "draining":
      return `[${clock(n.at)}] SYSTEM (${n.instance}): instance is draining; you stay connected, reconnect to move to a live instance`;
  }
}

/** Text mode's lines for the connection's own notices (JSON mode sends them as frames). */
export const renderExpiring = (n: Expiring): string =>
  `[${clock(n.expiresAt)}] SYSTEM: your client token expires; this connection closes in ${Math.round(n.closesInMs / 1000)} s unless refreshed (JSON mode)`;
export const renderLeft = (n: LeftRoom): string => `SYSTEM: left #${n.room}: ${n.error}`;
export const renderClosing = (e: ErrorBody): string => `SYSTEM: closing (${e.code}): ${e.error}`;

export const renderJson = (frame: WsServerFrame): string => JSON.stringify(frame);
