import type { Duplex } from "node:stream";

function destroyOnError(this: Duplex): void {
  this.destroy();
}

/**
 * Until a WebSocket library owns an upgraded socket, a peer that resets in
 * the middle of the handshake must not crash us. One shared function, not a
 * closure a connection; dropped once the library has its own error listener.
 */
export function guardUpgrade(socket: Duplex): void {
  socket.on("error", destroyOnError);
}

/** At the library's "headers" event (just before the 101): its own error listener is on the socket. */
export function releaseUpgradeGuard(socket: Duplex | null | undefined): void {
  socket?.removeListener("error", destroyOnError);
}
