import { readFileSync, readdirSync, readlinkSync } from "node:fs";

/**
 * Which processes listen on a TCP port, from /proc (Linux): the listening
 * sockets' inodes from /proc/net/tcp{,6}, then the fd tables that hold them.
 */

/** Inodes of the sockets listening on `port`; undefined when /proc cannot tell. */
function listeningInodes(port: number): Set<string> | undefined {
  const inodes = new Set<string>();
  let readable = false;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    readable = true;
    for (const row of text.split("\n").slice(1)) {
      // sl local_address rem_address st ... inode: LISTEN is 0A
      const f = row.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== "0A") continue;
      const local = f[1]!;
      if (parseInt(local.slice(local.lastIndexOf(":") + 1), 16) === port) inodes.add(f[9]!);
    }
  }
  return readable ? inodes : undefined;
}

/** Whether `pid` holds one of `inodes`; throws when its fd table cannot be read. */
function holdsSocket(pid: number, inodes: Set<string>): boolean {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode && inodes.has(inode)) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

/** Whether `pid` itself listens on `port`; undefined when /proc cannot tell. */
export function listensOn(pid: number, port: number): boolean | undefined {
  const inodes = listeningInodes(port);
  if (!inodes) return undefined;
  try {
    return holdsSocket(pid, inodes);
  } catch {
    return undefined;
  }
}

/**
 * Every process listening on 127.0.0.1:`port` (a Redis we did not spawn
 * ourselves, say). Walks every fd table: only call it before sockets pile up.
 */
export function pidsListeningOn(port: number): number[] {
  const inodes = listeningInodes(port);
  if (!inodes || inodes.size === 0) return [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  return entries
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => {
      try {
        return holdsSocket(pid, inodes);
      } catch {
        return false; // gone, or not ours to read
      }
    });
}
