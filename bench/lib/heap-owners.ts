/**
 * A V8 heap snapshot reduced to self size and count by constructor (objects),
 * function (closures) or kind (strings, arrays, code), each with the owner of
 * the code that made it: Socket.IO, Engine.IO, ws, Node, ours (server/), or
 * another package. Read from the snapshot itself: an object's map leads to
 * its prototype, the prototype's `constructor` to the class, the class's
 * shared function info to the script it was defined in; a closure's shared
 * function info to its own script. What has no script of its own (plain
 * objects and arrays, Maps, strings, contexts, property stores) takes the
 * owner of the nearest owned objects that hold it (at most 4 steps down the
 * heap graph, breadth first from every owned object at once): "shared" when
 * those are of two owners, "unowned" when none is that near. So a plain
 * object of ours hung on a Socket.IO socket (`socket.data`) counts as
 * Socket.IO's: compare targets (ours ÷ stock) to see what we add.
 */

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

export interface HeapGroup {
  what: string;
  owner: string;
  bytes: number;
  count: number;
}

/** Steps from an owned object down to what it holds that can take its owner. */
const MAX_DEPTH = 4;

/** Whose code a script is (its URL or path), or undefined for V8's own. */
export function ownerOfScript(script: string): string | undefined {
  if (!script) return undefined;
  const nm = script.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const pkg = /^((?:@[^/]+\/)?[^/]+)/.exec(script.slice(nm + "node_modules/".length))?.[1] ?? "?";
    if (pkg === "socket.io" || pkg.startsWith("socket.io-") || pkg.startsWith("@socket.io/")) return "Socket.IO";
    if (pkg === "engine.io" || pkg === "engine.io-parser") return "Engine.IO";
    return pkg;
  }
  if (script.startsWith("node:") || /^(internal|lib)\//.test(script)) return "Node";
  const m = /\/(server|bench|harness)\/[^/]+/.exec(script);
  if (m) return m[1] === "server" ? "ours (server/)" : `${m[1]}/`;
  return undefined;
}

/** Self size and count by (constructor or kind, owner). */
export function aggregateByOwner(snap: HeapSnapshot): Map<string, HeapGroup> {
  const meta = snap.snapshot.meta;
  const NF = meta.node_fields.length;
  const EF = meta.edge_fields.length;
  const N_TYPE = meta.node_fields.indexOf("type");
  const N_NAME = meta.node_fields.indexOf("name");
  const N_SIZE = meta.node_fields.indexOf("self_size");
  const N_EDGES = meta.node_fields.indexOf("edge_count");
  const E_TYPE = meta.edge_fields.indexOf("type");
  const E_NAME = meta.edge_fields.indexOf("name_or_index");
  const E_TO = meta.edge_fields.indexOf("to_node");
  const nodeTypes = meta.node_types[0];
  const edgeTypes = meta.edge_types[0];
  const { nodes, edges, strings } = snap;
  const count = nodes.length / NF;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e;
    e += nodes[i * NF + N_EDGES]! * EF;
  }
  firstEdge[count] = edges.length;
  const typeOf = (i: number) => nodeTypes[nodes[i * NF + N_TYPE]!] ?? "?";
  const nameOf = (i: number) => strings[nodes[i * NF + N_NAME]!] ?? "";
  const NAMED = new Set(["context", "property", "internal", "shortcut", "weak"].map((t) => edgeTypes.indexOf(t)));
  const STRONG = new Set(["context", "element", "property", "internal", "hidden"].map((t) => edgeTypes.indexOf(t)));
  /** The node a named edge of `i` leads to. */
  const follow = (i: number | undefined, name: string): number | undefined => {
    if (i === undefined) return undefined;
    for (let e = firstEdge[i]!; e < firstEdge[i + 1]!; e += EF) {
      if (NAMED.has(edges[e + E_TYPE]!) && strings[edges[e + E_NAME]!] === name) return edges[e + E_TO]! / NF;
    }
    return undefined;
  };
  const scriptOfFunction = (closure: number | undefined): string | undefined => {
    const script = follow(follow(closure, "shared"), "script_or_debug_info");
    return script === undefined ? undefined : nameOf(script);
  };
  // An object's own owner: its class's script (cached by prototype).
  const byPrototype = new Map<number, string | undefined>();
  const own = (i: number): string | undefined => {
    const t = typeOf(i);
    if (t === "closure") return ownerOfScript(scriptOfFunction(i) ?? "");
    if (t !== "object") return undefined;
    const proto = follow(follow(i, "map"), "prototype");
    if (proto === undefined) return undefined;
    if (!byPrototype.has(proto)) byPrototype.set(proto, ownerOfScript(scriptOfFunction(follow(proto, "constructor")) ?? ""));
    return byPrototype.get(proto);
  };

  const ownerIds: string[] = [];
  const ownerIndex = new Map<string, number>();
  const idOf = (o: string) => {
    let k = ownerIndex.get(o);
    if (k === undefined) {
      k = ownerIds.push(o) - 1;
      ownerIndex.set(o, k);
    }
    return k;
  };
  // Level by level, so the result does not depend on the order of the nodes: a node
  // first reached from objects of two owners at once is shared (and passes nothing on).
  const SHARED = idOf("shared");
  const owner = new Int32Array(count).fill(-1);
  let frontier: number[] = [];
  for (let i = 0; i < count; i++) {
    const o = own(i);
    if (o !== undefined) {
      owner[i] = idOf(o);
      frontier.push(i);
    }
  }
  for (let depth = 0; depth < MAX_DEPTH && frontier.length > 0; depth++) {
    const next = new Map<number, number>();
    for (const i of frontier) {
      for (let e = firstEdge[i]!; e < firstEdge[i + 1]!; e += EF) {
        if (!STRONG.has(edges[e + E_TYPE]!)) continue;
        const to = edges[e + E_TO]! / NF;
        if (owner[to] !== -1) continue;
        const seen = next.get(to);
        next.set(to, seen === undefined || seen === owner[i] ? owner[i]! : SHARED);
      }
    }
    frontier = [];
    for (const [node, o] of next) {
      owner[node] = o;
      if (o !== SHARED) frontier.push(node);
    }
  }

  const out = new Map<string, HeapGroup>();
  for (let i = 0; i < count; i++) {
    const type = typeOf(i);
    const name = nameOf(i);
    const what =
      type === "object" || type === "closure" || type === "native"
        ? `${type === "object" ? "" : `(${type}) `}${name.length > 60 ? `${name.slice(0, 60)}…` : name}`
        : type === "array"
          ? `(array) ${name}`
          : `(${type})`;
    const who = owner[i] === -1 ? "unowned" : ownerIds[owner[i]!]!;
    const key = `${what}\u0000${who}`;
    const g = out.get(key) ?? { what, owner: who, bytes: 0, count: 0 };
    g.bytes += nodes[i * NF + N_SIZE]!;
    g.count++;
    out.set(key, g);
  }
  return out;
}

export interface HeapRow {
  what: string;
  owner: string;
  bytesPerConnection: number;
  countPerConnection: number;
}

/** What grew between two snapshots, per connection: the rows that moved by `minBytes` or more, largest first, and the growth by owner (all rows). */
export function heapDiff(
  before: Map<string, HeapGroup>,
  after: Map<string, HeapGroup>,
  connections: number,
  minBytes = 4,
): { rows: HeapRow[]; byOwner: { owner: string; bytesPerConnection: number }[] } {
  const rows: HeapRow[] = [];
  const owners = new Map<string, number>();
  for (const key of new Set([...before.keys(), ...after.keys()])) {
    const a = after.get(key);
    const b = before.get(key);
    const g = (a ?? b)!;
    const bytes = (a?.bytes ?? 0) - (b?.bytes ?? 0);
    owners.set(g.owner, (owners.get(g.owner) ?? 0) + bytes);
    rows.push({
      what: g.what,
      owner: g.owner,
      bytesPerConnection: Math.round((bytes / connections) * 10) / 10,
      countPerConnection: Math.round((((a?.count ?? 0) - (b?.count ?? 0)) / connections) * 100) / 100,
    });
  }
  return {
    rows: rows.filter((x) => Math.abs(x.bytesPerConnection) >= minBytes).sort((x, y) => y.bytesPerConnection - x.bytesPerConnection),
    byOwner: [...owners.entries()]
      .map(([owner, bytes]) => ({ owner, bytesPerConnection: Math.round((bytes / connections) * 10) / 10 }))
      .sort((x, y) => y.bytesPerConnection - x.bytesPerConnection),
  };
}
