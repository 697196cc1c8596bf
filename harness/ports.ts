import { readFileSync } from "node:fs";
import net from "node:net";

/**
 * Ports for the processes the tests, the local stack and the benchmarks
 * start, and whether something answers on one. They come from below the
 * kernel's ephemeral range: a port the OS hands out for listen(0) is also one
 * it may give any outgoing connection as its local port before our process
 * binds it (EADDRINUSE under connection churn), and a benchmark's tens of
 * thousands of clients (and their TIME_WAIT leftovers) fill that range. Below
 * it only another explicit bind can take a port.
 */
const LOWEST = 10_000;

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > LOWEST + 1_000) return low;
  } catch {
    // not Linux: the IANA range's start, which other systems use
  }
  return 49_152;
}

/** A port free on `host` right now, for processes that cannot listen on 0 themselves. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return freePortRange(1, host);
}

/** `count` consecutive free ports (nginx + instances live at BASE+i). */
export async function freePortRange(count: number, host = "127.0.0.1"): Promise<number> {
  const high = ephemeralLow() - count;
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = LOWEST + Math.floor(Math.random() * (high - LOWEST));
    const ok = await Promise.all(Array.from({ length: count }, (_, i) => isFree(base + i, host)));
    if (ok.every(Boolean)) return base;
  }
  throw new Error(`no ${count} consecutive free ports on ${host} in ${LOWEST}..${high + count - 1}`);
}

/** Whether `host:port` can be bound right now. */
export function isFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** Whether something accepts a TCP connection on `host:port` right now (1 s at most). */
export function canConnect(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(1_000);
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}
