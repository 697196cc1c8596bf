import { f, KIB, md, n0, table } from "./lib/format.js";
import { mergeReadings, readingText } from "./lib/machine.js";
import { medianOf } from "./lib/spread.js";
import type { RunResults } from "./report.js";
import type { HeapRow } from "./lib/heap-owners.js";
import type { MemoryCell } from "./scenarios/memory.js";
import type { TargetName } from "./targets.js";

/** Memory per idle connection: the rounds, and where the heap goes by constructor and by whose code made it. */

const med = (m: MemoryCell, key: "rssPerConnection" | "heapPerConnection" | "externalPerConnection") => medianOf(m.rounds.map((x) => x[key]));

/** What a target's heap grew by a connection, by owner, beside the reference it builds on. */
const COMPARE: [TargetName, TargetName][] = [
  ["sio-1", "sio-stock"],
  ["ws-1", "raw"],
];

export function memoryConsole(r: RunResults): string[] {
  if (r.memory.length === 0) return [];
  const parts = [
    "\nMemory per idle connection (forced GC before and after; rounds after the first on fresh processes)",
    table(
      ["target", "transport", "clients", "RSS/conn KiB by round", "median", "heap/conn KiB", "external/conn KiB", "load; others"],
      r.memory.map((m) => [
        m.target,
        m.transport,
        n0(m.connected),
        m.rounds.map((x) => f(x.rssPerConnection / KIB, 2)).join(", "),
        f(med(m, "rssPerConnection") / KIB, 2),
        f(med(m, "heapPerConnection") / KIB, 2),
        f(med(m, "externalPerConnection") / KIB, 2),
        readingText(mergeReadings(m.rounds.map((x) => x.machine))),
      ]),
    ),
  ];
  const owners = r.memory.filter((m) => m.heapGrowth);
  if (owners.length > 0) {
    parts.push("  heap growth a connection by whose code made it (bytes):");
    for (const m of owners)
      parts.push(
        `  ${m.target}: ${m
          .heapGrowth!.byOwner.filter((o) => Math.abs(o.bytesPerConnection) >= 8)
          .map((o) => `${o.owner} ${f(o.bytesPerConnection, 0)}`)
          .join(", ")}`,
      );
  }
  return parts;
}

export function memoryMarkdown(r: RunResults): string[] {
  if (r.memory.length === 0) return [];
  const L = ["", "## Memory per idle connection", ""];
  L.push(
    `A forced full GC (HeapProfiler.collectGarbage over the inspector: the servers run with \`--inspect=127.0.0.1:0\`, no server change), then RSS (/proc VmRSS) and heap (\`process.memoryUsage()\`), before and after the idle clients and a ${r.options.memorySettleMs} ms settle period. ${r.options.memoryRounds > 1 ? `${r.options.memoryRounds} rounds a target: the first on the run's fresh processes, the others on processes started for the round (a process keeps the pages its first clients used, so a second round on it would read near zero); the figure is their median.` : "One round a target: one measurement."} KiB = 1024 bytes.`,
  );
  L.push("");
  L.push(
    md(
      [
        "target",
        "transport",
        "clients",
        "RSS before MiB",
        "RSS after MiB",
        "RSS/conn KiB by round",
        "median RSS/conn KiB",
        "heap/conn KiB",
        "external/conn KiB",
        "load; others",
      ],
      r.memory.map((m) => [
        m.target,
        m.transport,
        n0(m.connected),
        f(m.rssBefore / KIB / KIB, 1),
        f(m.rssAfter / KIB / KIB, 1),
        m.rounds.map((x) => f(x.rssPerConnection / KIB, 2)).join(", "),
        f(med(m, "rssPerConnection") / KIB, 2),
        f(med(m, "heapPerConnection") / KIB, 2),
        f(med(m, "externalPerConnection") / KIB, 2),
        readingText(mergeReadings(m.rounds.map((x) => x.machine))),
      ]),
      [0, 1, 5, 9],
    ),
  );
  const grown = r.memory.filter((m) => m.heapGrowth);
  if (grown.length === 0) return L;
  L.push("");
  L.push(
    "Where the heap per idle connection goes: two heap snapshots (V8 collects garbage first) around the idle clients, self size by constructor (objects), function (closures) or kind, per connection, each with the owner of the code that made it, read from the snapshot (bench/lib/heap-owners.ts): an object's class is followed to the script that defines it (`node_modules/socket.io*` → Socket.IO, `engine.io*` → Engine.IO, `ws` (Engine.IO has its own copy) → ws, `node:*` → Node, `server/` → ours, `bench/` → the reference servers); what has no class of its own (plain objects and arrays, Maps, strings, closure contexts, property stores) takes the owner of the nearest owned object that holds it. A `Socket` of Node (`net.Socket`), of Engine.IO and of Socket.IO are three rows. The service's Socket.IO path (server/realtime/socketio.ts) already drops the handshake request once a session is open (Engine.IO's `request` on the session and the `req` of the upgrade's response object, about 1.3 KB a connection) and shares one frozen empty `headers` and `query` object for every handshake; the `/ws` path keeps no request either.",
  );
  for (const m of grown) {
    const g = m.heapGrowth!;
    L.push(
      "",
      `${m.target} (${m.transport}), ${n0(g.clients)} clients. By owner (bytes a connection): ${g.byOwner
        .filter((o) => Math.abs(o.bytesPerConnection) >= 8)
        .map((o) => `${o.owner} ${f(o.bytesPerConnection, 0)}`)
        .join(", ")}.`,
      "",
    );
    L.push(
      md(
        ["what", "owner", "bytes/conn", "count/conn"],
        g.rows
          .filter((x) => x.bytesPerConnection >= 8)
          .slice(0, 25)
          .map((x) => [`\`${x.what.replace(/[|`]/g, " ")}\``, x.owner, f(x.bytesPerConnection, 0), f(x.countPerConnection, 2)]),
        [0, 1],
      ),
    );
  }
  const pairs = COMPARE.flatMap(([ours, ref]) => {
    const a = r.memory.find((m) => m.target === ours)?.heapGrowth;
    const b = r.memory.find((m) => m.target === ref)?.heapGrowth;
    return a && b ? [{ ours, ref, a, b }] : [];
  });
  for (const { ours, ref, a, b } of pairs) {
    const owners = [...new Set([...a.byOwner, ...b.byOwner].map((o) => o.owner))];
    const of = (g: typeof a, owner: string) => g.byOwner.find((o) => o.owner === owner)?.bytesPerConnection ?? 0;
    L.push("", `What ${ours} adds to ${ref}, heap bytes a connection by owner (the RSS figures above are the whole process):`, "");
    L.push(
      md(
        ["owner", ref, ours, "difference"],
        owners
          .map((o) => ({ o, x: of(b, o), y: of(a, o) }))
          .filter(({ x, y }) => Math.abs(x) >= 8 || Math.abs(y) >= 8)
          .sort((p, q) => q.y - q.x - (p.y - p.x))
          .map(({ o, x, y }) => [o, f(x, 0), f(y, 0), f(y - x, 0)]),
      ),
    );
    const key = (x: HeapRow) => `${x.what}\u0000${x.owner}`;
    const bRows = new Map(b.rows.map((x) => [key(x), x]));
    const aRows = new Map(a.rows.map((x) => [key(x), x]));
    const moved = [...new Set([...aRows.keys(), ...bRows.keys()])]
      .map((k) => {
        const x = (aRows.get(k) ?? bRows.get(k))!;
        return { what: x.what, owner: x.owner, d: (aRows.get(k)?.bytesPerConnection ?? 0) - (bRows.get(k)?.bytesPerConnection ?? 0) };
      })
      .filter((x) => Math.abs(x.d) >= 16)
      .sort((p, q) => Math.abs(q.d) - Math.abs(p.d))
      .slice(0, 15);
    if (moved.length > 0) {
      L.push("", `The rows that differ most (${ours} − ${ref}, bytes a connection; rows under 4 bytes count as 0):`, "");
      L.push(
        md(
          ["what", "owner", "difference"],
          moved.map((x) => [`\`${x.what.replace(/[|`]/g, " ")}\``, x.owner, f(x.d, 0)]),
          [0, 1],
        ),
      );
    }
  }
  return L;
}
