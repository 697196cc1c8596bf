import net from "node:net";
import { readFileSync } from "node:fs";

/** The kernel's ephemeral port range (outgoing connections take their source ports from it). */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (lo && hi) return [lo, hi];
  } catch {
    // not Linux
  }
  return [32768, 60999];
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ port, host: "127.0.0.1", exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * `count` consecutive free ports below the ephemeral range. Servers under
 * test listen there, so the tens of thousands of client connections (whose
 * source ports, and TIME_WAIT leftovers, fill the ephemeral range) can never
 * take a server's port, and a range is still found after a big run.
 */
export async function serverPorts(count: number): Promise<number> {
  const [lo] = ephemeralRange();
  const top = Math.min(lo, 65535) - count;
  const bottom = 10_000;
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = bottom + Math.floor(Math.random() * (top - bottom));
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await canListen(base + i);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports between ${bottom} and ${top}`);
}
