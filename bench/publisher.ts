import WebSocket from "ws";
import { EngineClient } from "./engine-client.js";
import { BROADCAST_MARK, type Kind } from "./generator/protocol.js";
import { nowUs } from "./lib/clock.js";

/**
 * Publishes broadcasts through a target's own client path: a text frame on the
 * baseline or on /ws, a Socket.IO `message` event (no ack) on Socket.IO. Every
 * text is `bm|<seq>|<publishedUs>|<padding>` so receivers can time it.
 */
export class Publisher {
  readonly #send: (text: string) => void;
  readonly #close: () => void;
  readonly #isOpen: () => boolean;
  readonly #pad: string;

  private constructor(send: (text: string) => void, close: () => void, isOpen: () => boolean, payloadBytes: number) {
    this.#send = send;
    this.#close = close;
    this.#isOpen = isOpen;
    // seq and a 10-digit microsecond stamp take about 20 bytes.
    this.#pad = "p".repeat(Math.max(0, payloadBytes - 24));
  }

  static async connect(kind: Kind, baseUrl: string, payloadBytes: number): Promise<Publisher> {
    if (kind === "sio") {
      const c = new EngineClient(baseUrl, { auth: { clientId: `bench-publisher-${process.pid}-${Date.now()}` } });
      await c.ready;
      return new Publisher(
        (text) => c.emit("message", text),
        () => c.close(),
        () => c.ws.readyState === WebSocket.OPEN,
        payloadBytes,
      );
    }
    const url = `${baseUrl.replace(/^http/, "ws")}${kind === "ws" ? "/ws" : "/"}`;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    ws.on("error", () => undefined);
    return new Publisher(
      (text) => ws.readyState === ws.OPEN && ws.send(text),
      () => ws.terminate(),
      () => ws.readyState === ws.OPEN,
      payloadBytes,
    );
  }

  /** Publishes broadcast `seq`; answers its publish time (µs since the shared epoch). */
  publish(seq: number): number {
    const t = nowUs();
    this.#send(`${BROADCAST_MARK}${seq}|${t}|${this.#pad}`);
    return t;
  }

  /** Whether its connection is still open (the server may cut it). */
  get open(): boolean {
    return this.#isOpen();
  }

  close(): void {
    this.#close();
  }
}
