import { f, MIB, md, n0, table } from "./lib/format.js";
import { readingText } from "./lib/machine.js";
import type { RunResults } from "./report.js";
import type { AttackCell, AttackName, AttackPhase, AttackResult } from "./scenarios/abuse-attacks.js";
import { FILL_BYTES, FLOOD_ADDRESS, REPLAY_ADDRESS } from "./scenarios/abuse-attacks.js";
import { AFTER_OF, type TargetName } from "./targets.js";

/** The abuse scenario's replay and address attacks: one table of figures, each target a column, after ÷ before beside them. */

const ATTACK_TITLES: Record<AttackName, string> = { replay: "C replay", address: "D address flood" };

/** A server count, or "n/a" when the instances do not expose it. */
const na = (v: number | undefined) => (v === undefined ? "n/a" : n0(v));
const codes = (by: Record<string, number> | undefined) =>
  by === undefined
    ? "n/a"
    : Object.entries(by)
        .map(([k, v]) => `${k} ${n0(v)}`)
        .join(", ") || "none";

/** One figure of an attack: its text and, when it is a number, the value the ratio column divides. */
interface Figure {
  text: string;
  value: number | undefined;
}

const slowlogText = (p: AttackPhase) => (p.slowlog ? `${f(p.slowlog.ms, 1)} ms ${p.slowlog.command}` : p.slowlogError ? `– (${p.slowlogError})` : "–");

function attackerText(p: AttackPhase): string {
  const r = p.replay;
  if (r) {
    const refused = Object.entries({ ...r.refused, ...r.failed })
      .map(([k, v]) => `${v}× ${k}`)
      .join(", ");
    return `${n0(r.requests)} requests from ${REPLAY_ADDRESS}, ${n0(r.upgraded)} upgraded${refused ? ` (${refused})` : ""}; welcomes: ${n0(r.recovered)} recovered, ${n0(r.replayed)} replayed (most ${n0(r.replayedMax)})${Object.keys(r.reasons).length ? `, reasons ${codes(r.reasons)}` : ""}`;
  }
  const a = p.address;
  if (a) {
    const errs = Object.entries(a.connectErrors)
      .map(([k, v]) => `${v}× ${k}`)
      .join(", ");
    return `${n0(a.connects)} connections opened from ${FLOOD_ADDRESS} for ${n0(a.connections)} (most ${n0(a.openMax)} open at once, ${n0(a.closedByServer)} closed under it, ${n0(a.connectFailures)} connects refused${errs ? `: ${errs}` : ""}); ${n0(a.sent)} messages sent, ${n0(a.skipped)} skipped (socket full or timer late), ${na(p.server.wsPublished)} published`;
  }
  return "";
}

/** The figures of one attack, in table order. */
const FIGURES: { name: string; of: (x: AttackResult) => Figure }[] = [
  {
    name: "bystanders' p99 publish→receipt ÷ baseline",
    of: (x) => ({
      value: x.p99Ratio,
      text: `${f(x.p99Ratio)}× (${f(x.under.probe.latency.p99)} vs ${f(x.baseline.probe.latency.p99)} ms)`,
    }),
  },
  {
    name: "bystanders cut by the server (Δ wbs_slow_clients_cut_total, attackers' too)",
    of: (x) => ({ value: x.under.bystandersCut, text: `${n0(x.under.bystandersCut)} of ${n0(x.under.bystandersOpen)} (${na(x.under.server.slowCuts)})` }),
  },
  {
    name: "probe messages lost (deliveries; at bystanders still open)",
    of: (x) => {
      const p = x.under.probe;
      const cut = p.unsent > 0 ? `; probe cut, ${n0(p.unsent)} not sent, ${n0(p.reconnects)} reconnects` : "";
      return { value: p.lost, text: `${n0(p.lost)} of ${n0(p.expected)} (${n0(p.lostByOpen)})${cut}` };
    },
  },
  {
    name: "Redis CPU, % of one core (baseline)",
    of: (x) => ({ value: x.under.cpu.redis, text: `${f(x.under.cpu.redis, 1)} (${f(x.baseline.cpu.redis, 1)})` }),
  },
  {
    name: "largest Redis SLOWLOG entry (baseline)",
    of: (x) => ({ value: x.under.slowlog?.ms, text: `${slowlogText(x.under)} (${slowlogText(x.baseline)})` }),
  },
  {
    name: "instance RSS growth, MiB (largest instance)",
    of: (x) => ({
      value: Number.isFinite(x.under.rssGrowthMax) ? x.under.rssGrowthMax / MIB : undefined,
      text: `${f(x.under.rssGrowthMax / MIB, 1)}${x.under.rssGrowthInstance ? ` (${x.under.rssGrowthInstance})` : ""}`,
    }),
  },
  {
    name: "refused: Δ wbs_rate_limited_total; Δ wbs_refusals_total by code",
    of: (x) => ({ value: undefined, text: `${na(x.under.server.rateLimited)}; ${codes(x.under.server.refusals)}` }),
  },
  { name: "attacker", of: (x) => ({ value: undefined, text: attackerText(x.under) }) },
];

/** The cells in column order (a before checkout's first, then its twin), and whether a ratio column goes beside them. */
function columns(r: RunResults): { cells: AttackCell[]; pair: [AttackCell, AttackCell] | undefined } {
  const cells = [...r.abuseAttacks].sort((a, b) => Number(AFTER_OF[b.target] !== undefined) - Number(AFTER_OF[a.target] !== undefined));
  const before = cells.find((c) => AFTER_OF[c.target] !== undefined);
  const after = before && cells.find((c) => c.target === (AFTER_OF[before.target] as TargetName));
  return { cells, pair: before && after ? [before, after] : undefined };
}

const ratio = (after: number | undefined, before: number | undefined) =>
  after === undefined || before === undefined || !Number.isFinite(after) || !Number.isFinite(before) || before <= 0 ? "–" : `${f(after / before)}×`;

function figureRows(r: RunResults): { header: string[]; rows: string[][] } {
  const { cells, pair } = columns(r);
  const header = ["attack", "figure", ...cells.map((c) => c.target), ...(pair ? [`${pair[1].target} ÷ ${pair[0].target}`] : [])];
  const rows: string[][] = [];
  for (const attack of ["replay", "address"] as const) {
    const results = cells.map((c) => c.results.find((x) => x.attack === attack));
    if (results.every((x) => x === undefined)) continue;
    for (const fig of FIGURES) {
      const values = results.map((x) => (x ? fig.of(x) : undefined));
      const pairValues = pair ? [cells.indexOf(pair[0]), cells.indexOf(pair[1])].map((i) => values[i]?.value) : [];
      rows.push([ATTACK_TITLES[attack], fig.name, ...values.map((v) => v?.text ?? "not measured"), ...(pair ? [ratio(pairValues[1], pairValues[0])] : [])]);
    }
  }
  return { header, rows };
}

const fillLine = (c: AttackCell) =>
  c.fill
    ? `${c.target}: history filled with ${n0(c.fill.entries)} entries of ${n0(c.fill.bytes / 1024)} KiB in ${f(c.fill.seconds, 1)} s (${n0(c.fill.seen)} seen by the watcher; oldest offset ${c.fill.oldest}; admin token ${c.fill.token ? "sent" : "none"})`
    : `${c.target}: history not filled`;

export function attacksConsole(r: RunResults): string[] {
  if (r.abuseAttacks.length === 0) return [];
  const o = r.options;
  const { header, rows } = figureRows(r);
  return [
    `\nAbuse attacks via nginx on the four-instance stack (limits at their defaults; ${n0(o.abuseBystanders)} Socket.IO bystanders from 127.0.0.2–61, probe every ${o.abuseProbeGapMs} ms; each attack against a baseline just before it)`,
    ...r.abuseAttacks.map((c) => `  ${fillLine(c)}`),
    table(
      header,
      rows,
      header.map(() => "l"),
    ),
  ];
}

const cpuText = (cpu: Record<string, number>) =>
  Object.entries(cpu)
    .map(([k, v]) => `${k} ${f(v, 0)}`)
    .join(", ");

const movedText = (moved: Record<string, number>) =>
  Object.entries(moved)
    .map(([k, v]) => `${k.replace(/\|/g, "/")} ${n0(v)}`)
    .join(", ") || "–";

export function attacksMarkdown(r: RunResults): string[] {
  if (r.abuseAttacks.length === 0) return [];
  const o = r.options;
  const L = ["", "## Abuse: replay and address flood via nginx", ""];
  L.push(
    `The four-instance stack behind nginx (${r.abuseAttacks.map((c) => `\`${c.target}\``).join(", ")}), started for these two attacks with the service's limits at their defaults (PERIODIC_INTERVAL_SEC=0, LOG_LEVEL=warn) and nginx's per-address limits as shipped. First the history is filled with ${n0(o.abuseFill)} entries of ${n0(FILL_BYTES / 1024)} KiB (POST /broadcast-to-all through nginx, with \`Authorization: Bearer\` when the stack has an admin token), watched by a /ws client in JSON mode: its welcome gives the epoch, the first entry its offset. Then, for each attack, ${n0(o.abuseBystanders)} Socket.IO bystanders connect through nginx from 127.0.0.2–61, a well-behaved probe (Socket.IO, 127.0.0.1) publishes one message every ${o.abuseProbeGapMs} ms (it connects again when cut), and the bystanders' publish-to-receipt latency is measured in a baseline (${o.abuseBaselineMs / 1000} s, probe only) and under the attack; the bystanders are closed after it.`,
  );
  L.push("");
  L.push(
    `- **C replay** (${o.abuseReplayMs / 1000} s): from ${REPLAY_ADDRESS}, ${o.abuseReplayRequests} connections to \`/ws?format=json&since=<oldest>&epoch=<epoch>\`, one every ${f(o.abuseReplayMs / o.abuseReplayRequests / 1000, 2)} s; each reads its welcome and nothing more (the socket paused) and is dropped when the next one connects.`,
  );
  L.push(
    `- **D address flood** (${o.abuseAddressMs / 1000} s): ${o.abuseAddressConns} /ws connections from ${FLOOD_ADDRESS}, each sending ${o.abuseAddressRate} messages a second of ${n0(o.abuseAddressBytes / 1024)} KiB (under the per-connection limit of 20), reading what comes unparsed; one that is closed connects again after 50 ms.`,
  );
  L.push("");
  L.push(
    "Both attackers run in a generator process of their own, on bare sockets. Bystanders cut: receivers the server closed (in brackets Δ wbs_slow_clients_cut_total summed over the instances, which counts the attackers' connections too). Probe lost: deliveries expected (messages sent × bystanders open at the start) that did not arrive within the tail (as long as the phase, 2–10 s), in brackets those of bystanders still open. Redis CPU: redis-server's /proc CPU over the attack (tail excluded), percent of one core. SLOWLOG: every command logged (`slowlog-log-slower-than 0`) from the phase's start to the end of its tail, the longest entry's duration (Redis's own time for it) and command name; settings restored after. RSS: VmRSS every 100 ms, the most during the phase and tail less just before, the instance that grew most. n/a: the instances have no such metric.",
  );
  for (const c of r.abuseAttacks) L.push("", `- ${fillLine(c)}`);
  L.push("", `Load over the attacks: ${readingText(r.machineByScenario["abuse attacks"])}. Each figure is one measurement.`, "");
  const { header, rows } = figureRows(r);
  L.push(
    md(
      header,
      rows,
      header.map((_, i) => i),
    ),
  );
  L.push("");
  L.push(
    md(
      [
        "target",
        "attack",
        "phase",
        "s",
        "probe sent",
        "not sent (reconnects)",
        "delivered",
        "lost (at open)",
        "p50 ms",
        "p99 ms",
        "max ms",
        "tail ms",
        "bystanders cut",
        "slow cuts",
        "rate limited",
        "refusals",
        "Redis CPU %",
        "SLOWLOG max",
        "RSS +max MiB",
        "log records",
        "CPU by process",
        "wbs_ counters that moved",
      ],
      r.abuseAttacks.flatMap((c) =>
        c.results.flatMap((x) =>
          [x.baseline, x.under].map((p) => [
            c.target,
            ATTACK_TITLES[x.attack],
            p.phase,
            f(p.seconds, 1),
            n0(p.probe.sent),
            `${n0(p.probe.unsent)} (${n0(p.probe.reconnects)})`,
            `${n0(p.probe.delivered)}/${n0(p.probe.expected)}`,
            `${n0(p.probe.lost)} (${n0(p.probe.lostByOpen)})`,
            f(p.probe.latency.p50),
            f(p.probe.latency.p99),
            f(p.probe.latency.max),
            n0(p.probe.tailMs),
            `${n0(p.bystandersCut)}/${n0(p.bystandersOpen)}`,
            na(p.server.slowCuts),
            na(p.server.rateLimited),
            codes(p.server.refusals),
            f(p.cpu.redis, 1),
            slowlogText(p),
            f(p.rssGrowthMax / MIB, 1),
            n0(p.logRecords),
            cpuText(p.cpu),
            movedText(p.server.moved),
          ]),
        ),
      ),
      [0, 1, 2, 15, 17, 20, 21],
    ),
  );
  const attackers = r.abuseAttacks.flatMap((c) => c.results.map((x) => `- ${c.target}, ${ATTACK_TITLES[x.attack]}: ${attackerText(x.under)}`));
  if (attackers.length > 0) L.push("", "What the attackers did and met:", "", ...attackers);
  return L;
}
