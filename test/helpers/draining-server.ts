import http from "node:http";
import type { AddressInfo } from "node:net";
import { Server } from "socket.io";
import { ServiceError } from "../../server/errors.js";

export interface DrainingServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** Namespace connects so far, refused and accepted. */
  attempts(): number;
  close(): Promise<void>;
}

/**
 * A bare Socket.IO server that answers like an instance whose drain began
 * between the Engine.IO handshake and the namespace connect, a race too
 * narrow to hit on a real one: its middleware refuses the first `refusals`
 * connects with the service's DRAINING connect_error, then accepts and sends
 * a `welcome` as `instance`. With `handler`, plain HTTP requests go to it
 * (the demo page, say).
 */
export async function startDrainingServer(o: { refusals: number; instance: string; handler?: http.RequestListener }): Promise<DrainingServer> {
  const server = http.createServer(o.handler);
  const io = new Server(server);
  let attempts = 0;
  io.use((_socket, next) => {
    if (++attempts > o.refusals) return next();
    next(new ServiceError("DRAINING"));
  });
  io.on("connection", (socket) => {
    socket.emit("welcome", { clientId: socket.handshake.auth.clientId, instance: o.instance, commands: [], at: new Date().toISOString() });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    attempts: () => attempts,
    close: () => new Promise((resolve) => io.close(() => resolve())),
  };
}
