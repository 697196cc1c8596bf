import WebSocket from "ws";
import { type HttpAnswer, httpRequest } from "./http-request.js";

/**
 * Engine.IO v4 by hand, for what socket.io-client does not let a test
 * control: a handshake that never goes further, a request of an existing
 * session from another source address, a session upgraded to WebSocket from
 * another address than the one that opened it.
 */

const path = (base: string, query: string) => `${base.replace(/\/+$/, "")}/socket.io/?EIO=4&${query}`;

/** A new polling session (GET without a sid); `sid` is set when it was opened (200 `0{"sid":...}`). */
export async function pollingHandshake(baseUrl: string, opts: { localAddress?: string } = {}): Promise<HttpAnswer & { sid: string | undefined }> {
  const res = await httpRequest(path(baseUrl, "transport=polling"), { localAddress: opts.localAddress });
  let sid: string | undefined;
  if (res.status === 200 && res.body.startsWith("0")) sid = (JSON.parse(res.body.slice(1)) as { sid: string }).sid;
  return { ...res, sid };
}

/** POST packets to a polling session (`"40"` connects the namespace, `"1"` closes the session). */
export function pollingSend(baseUrl: string, sid: string, payload: string, opts: { localAddress?: string } = {}): Promise<HttpAnswer> {
  return httpRequest(path(baseUrl, `transport=polling&sid=${encodeURIComponent(sid)}`), {
    method: "POST",
    headers: { "content-type": "text/plain;charset=UTF-8" },
    body: payload,
    localAddress: opts.localAddress,
  });
}

/**
 * GET a polling session's pending packets. Only call it when the server has
 * something to send (after `"40"`): otherwise it waits for the next ping.
 */
export function pollingReceive(baseUrl: string, sid: string, opts: { localAddress?: string } = {}): Promise<HttpAnswer> {
  return httpRequest(path(baseUrl, `transport=polling&sid=${encodeURIComponent(sid)}`), { localAddress: opts.localAddress });
}

/**
 * Upgrades an open polling session to WebSocket (`2probe` / `3probe` / `5`),
 * from `localAddress` when given, and resolves with the open socket. Rejects
 * with `{ status }` when the upgrade request is refused.
 */
export function upgradeSession(wsBaseUrl: string, sid: string, opts: { localAddress?: string; timeoutMs?: number } = {}): Promise<WebSocket> {
  const ws = new WebSocket(path(wsBaseUrl, `transport=websocket&sid=${encodeURIComponent(sid)}`), { localAddress: opts.localAddress });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`upgrade of ${sid} not done within ${opts.timeoutMs ?? 5_000} ms`));
    }, opts.timeoutMs ?? 5_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      ws.terminate();
      reject(err);
    };
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      fail(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
    });
    ws.once("error", fail);
    ws.once("close", (code) => fail(new Error(`closed (${code}) before the upgrade was done`)));
    ws.once("open", () => ws.send("2probe"));
    ws.on("message", function onMessage(data) {
      if (data.toString() !== "3probe") return;
      ws.off("message", onMessage);
      ws.send("5");
      clearTimeout(timer);
      ws.removeAllListeners("error");
      ws.removeAllListeners("close");
      ws.on("error", () => undefined); // a reset at cleanup is no failure
      resolve(ws);
    });
  });
}
