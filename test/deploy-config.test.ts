import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect } from "chai";
import { INSTANCE_COUNT, NGINX_CONF, renderNginxConf } from "../harness/nginx.js";
import { canConnect } from "../harness/ports.js";
import { childPids } from "../harness/procfs.js";
import { type Stack, startStack } from "../harness/stack.js";
import { CONFIG_VARIABLES } from "../server/config.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const COMPOSE_FILE = path.join(ROOT, "docker-compose.yml");
const run = promisify(execFile);

/** Runs a command; resolves with its output, or rejects with its stderr in the message. */
async function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, timeout: 30_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${(e.stderr || e.stdout || e.message).trim()}`);
  }
}

async function commandWorks(cmd: string, args: string[]): Promise<boolean> {
  try {
    await run(cmd, args, { timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** `docker compose` when the plugin exists, else Debian's `docker-compose` 1.x; undefined when neither does. */
async function composeCommand(): Promise<string[] | undefined> {
  if (await commandWorks("docker", ["compose", "version"])) return ["docker", "compose"];
  if (await commandWorks("docker-compose", ["version"])) return ["docker-compose"];
  return undefined;
}

/** The resolved compose model as YAML, with the defaults of every ${VAR:-default} (those variables unset). */
async function composeConfig(compose: string[], ...extra: string[]): Promise<string> {
  const env = { ...process.env };
  for (const key of Object.keys(env))
    if (
      /^(FORCED_SHUTDOWN_AFTER_SEC|STOP_GRACE_PERIOD|LOG_LEVEL|PROGRESS_LOG_EVERY_SEC|PERIODIC_INTERVAL_SEC|MAX_MESSAGE_BYTES|MAX_BUFFERED_BYTES|CORS_ORIGINS|ADMIN_TOKEN|COMPOSE_.*)$/.test(
        key,
      )
    )
      delete env[key];
  const [cmd, ...args] = compose;
  return (await sh(cmd!, [...args, "-f", COMPOSE_FILE, "config", ...extra], { env })).stdout;
}

/** Splits the `services:` mapping of `config` output into service name -> its block of text. */
function serviceBlocks(yaml: string): Map<string, string> {
  const lines = yaml.split("\n");
  const start = lines.findIndex((l) => /^services:\s*$/.test(l));
  expect(start, "no services: in the compose config output").to.be.greaterThan(-1);
  const blocks = new Map<string, string>();
  let name: string | undefined;
  for (const line of lines.slice(start + 1)) {
    if (/^\S/.test(line)) break; // next top-level key
    const header = /^ {2}([A-Za-z0-9_.-]+):\s*$/.exec(line);
    if (header) {
      name = header[1]!;
      blocks.set(name, "");
    } else if (name) {
      blocks.set(name, `${blocks.get(name)}${line}\n`);
    }
  }
  return blocks;
}

/** The sub-block under `key:` inside a block (deeper-indented lines that follow it), joined. */
function subBlock(block: string, key: string): string | undefined {
  const lines = block.split("\n");
  const at = lines.findIndex((l) => new RegExp(`^\\s*${key}:`).test(l));
  if (at === -1) return undefined;
  const indent = /^\s*/.exec(lines[at]!)![0].length;
  const out = [lines[at]!];
  for (const line of lines.slice(at + 1)) {
    if (line.trim() !== "" && /^\s*/.exec(line)![0].length <= indent) break;
    out.push(line);
  }
  return out.join(" ");
}

const scalar = (block: string, key: string): string | undefined => new RegExp(`^\\s*${key}:\\s*["']?([^"'\\s]*)["']?\\s*$`, "m").exec(block)?.[1];

/** Compose durations: "31m", "31m0s", "1h1m", "1860s", "90" (seconds). */
function durationSec(text: string): number {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(h|ms|us|m|s)/g)];
  expect(parts.map((p) => p[0]).join(""), `duration ${text}`).to.equal(text);
  const unit: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 };
  return parts.reduce((sum, p) => sum + Number(p[1]) * unit[p[2]!]!, 0);
}

/** nginx.conf: Engine.IO sid prefix -> upstream, upstream -> its servers. */
function nginxRouting(conf: string): { sidPrefixes: Map<string, string>; upstreams: Map<string, string[]> } {
  const code = conf.replace(/#[^\n]*/g, "");
  const map = /map\s+\$arg_sid\s+\$\w+\s*\{([^}]*)\}/.exec(code);
  expect(map, "nginx.conf has no map $arg_sid").to.not.equal(null);
  const sidPrefixes = new Map<string, string>();
  for (const m of map![1]!.matchAll(/"~\^([A-Za-z0-9-]+)\\\."\s+(\w+)\s*;/g)) sidPrefixes.set(m[1]!, m[2]!);
  const upstreams = new Map<string, string[]>();
  for (const m of code.matchAll(/upstream\s+(\w+)\s*\{([^}]*)\}/g)) {
    upstreams.set(
      m[1]!,
      [...m[2]!.matchAll(/\bserver\s+(\S+?)[\s;]/g)].map((s) => s[1]!),
    );
  }
  return { sidPrefixes, upstreams };
}

/** Alive (not a zombie) per /proc. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] !== "Z";
  } catch {
    return false;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim();
  } catch {
    return "";
  }
}

describe("deployment configuration", function () {
  this.timeout(60_000);
  let tmp: string;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "deploy-config-"));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  describe("nginx.conf", () => {
    it("passes nginx -t as shipped (ws1..ws4 resolving as inside Docker)", async function () {
      if (process.getuid?.() !== 0) this.skip(); // unshare -m + mount --bind need root
      const hosts = path.join(tmp, "hosts");
      await writeFile(hosts, `127.0.0.1 localhost\n${Array.from({ length: INSTANCE_COUNT }, (_, i) => `127.0.0.1 ws${i + 1}`).join("\n")}\n`);
      // A private mount namespace: /etc/hosts is replaced for nginx -t only.
      const script = 'mount --bind "$1" /etc/hosts && exec nginx -t -c "$2" -g "pid $3/nginx.pid;" -e "$3/err.log"';
      const { stderr } = await sh("unshare", ["-m", "sh", "-c", script, "sh", hosts, NGINX_CONF, tmp]);
      expect(stderr).to.match(/test is successful/);
    });

    it("renders for loopback: addresses, listen and temp paths change, nothing else", async () => {
      const source = await readFile(NGINX_CONF, "utf8");
      const rendered = renderNginxConf(source, 40000, "/tmp/stack-x", { maxNofile: 20000 });
      const code = rendered.replace(/#[^\n]*/g, "");
      expect(code).to.not.match(/\bws\d+:8000\b/);
      for (let n = 1; n <= INSTANCE_COUNT; n++) expect(code).to.contain(`server 127.0.0.1:${40000 + n}`);
      expect(code).to.match(/\blisten 127\.0\.0\.1:40000[ ;]/);
      expect(code).to.not.match(/\blisten 8080\b/);
      expect(code).to.contain("proxy_temp_path /tmp/stack-x/proxy_temp;");
      expect(code).to.contain("client_body_temp_path /tmp/stack-x/client_body_temp;");

      // Undo the known substitutions and drop the inserted lines: the source remains.
      const undone = rendered
        .split("\n")
        .filter((l) => !/^\s*\w+_temp_path \/tmp\/stack-x\//.test(l) && !/^\s*# Loopback run/.test(l))
        .map((l) =>
          l
            .replace(/server(\s+)127\.0\.0\.1:(\d+)/g, (_m, sp: string, p: string) => `server${sp}ws${Number(p) - 40000}:8000`)
            .replace("listen 127.0.0.1:40000", "listen 8080")
            // A 20000 descriptor cap: fewer connections a worker, more workers (harness/nginx.ts workersUnderCap).
            .replace(/worker_rlimit_nofile 20000;/, /worker_rlimit_nofile\s+\d+;/.exec(source)?.[0] ?? "")
            .replace(/worker_connections 20000;/, /worker_connections\s+\d+;/.exec(source)?.[0] ?? "")
            .replace(/worker_processes \d+;/, /worker_processes\s+\w+;/.exec(source)?.[0] ?? ""),
        )
        .join("\n");
      expect(undone).to.equal(source);
      // Without a lower limit, worker_rlimit_nofile stays as shipped.
      expect(renderNginxConf(source, 40000, "/tmp/stack-x")).to.contain(/worker_rlimit_nofile\s+\d+;/.exec(source)![0]);
      // Under a 20000 cap, workers enough for what nginx.conf sizes (auto on 2 cores: 2 × 32768 connections).
      expect(renderNginxConf(source, 40000, "/tmp/stack-x", { maxNofile: 20000, cpus: 2 })).to.match(/^worker_processes 4;/m);
      // A config that no longer has the expected shape is refused, not half-rendered.
      expect(() => renderNginxConf(source.replace("server ws4:8000;", "server ws5:8000;"), 40000, "/tmp/x")).to.throw(/ws1:8000/);
      expect(() => renderNginxConf(source.replace("listen 8080", "listen 9090"), 40000, "/tmp/x")).to.throw(/listen 8080/);
    });

    it("passes nginx -t once rendered for loopback", async () => {
      const conf = path.join(tmp, "rendered.conf");
      await writeFile(conf, renderNginxConf(await readFile(NGINX_CONF, "utf8"), 40000, tmp));
      const { stderr } = await sh("nginx", ["-t", "-c", conf, "-g", `pid ${tmp}/nginx.pid;`, "-e", `${tmp}/err.log`]);
      expect(stderr).to.match(/test is successful/);
    });
  });

  describe("docker-compose.yml", () => {
    let compose: string[] | undefined;
    before(async () => {
      compose = await composeCommand();
    });

    it("passes `docker compose config -q` (or docker-compose)", async function () {
      if (!compose) this.skip(); // neither `docker compose` nor `docker-compose` here
      await composeConfig(compose, "-q");
    });

    it("passes every variable the service reads to each instance (INSTANCE_ID per service)", async function () {
      if (!compose) this.skip();
      const services = serviceBlocks(await composeConfig(compose));
      for (const name of ["ws1", "ws2", "ws3", "ws4"]) {
        const env = subBlock(services.get(name) ?? "", "environment") ?? "";
        const missing = CONFIG_VARIABLES.filter((key) => !new RegExp(`(^|\\s)${key}:`).test(env));
        expect(missing, `${name}: variables compose does not pass`).to.deep.equal([]);
      }
    });

    it("runs ws1..ws4 as nginx.conf routes them, each health-checked on /readyz, given longer than its drain to stop, at a fixed address", async function () {
      if (!compose) this.skip();
      const config = await composeConfig(compose);
      const services = serviceBlocks(config);
      // nginx resolves ws1..ws4 once: a replaced container must come back where nginx looks.
      const subnet = /^networks:[\s\S]*?subnet: (\d+\.\d+\.\d+)\.0\/24\s*$/m.exec(config)?.[1];
      expect(subnet, "a /24 subnet for the backend network").to.be.a("string");
      // Containers without a fixed address draw from ip_range: it must not hold an instance's.
      const range = /^\s+(?:- )?ip_range: (\d+\.\d+\.\d+)\.(\d+)\/(\d+)\s*$/m.exec(config);
      expect(range, "an ip_range for containers without a fixed address").to.not.equal(null);
      expect(range![1], "ip_range inside the subnet").to.equal(subnet);
      const rangeFirst = Number(range![2]);
      const rangeLast = rangeFirst + 2 ** (32 - Number(range![3])) - 1;
      const addresses = new Set<string>();
      const { sidPrefixes, upstreams } = nginxRouting(await readFile(NGINX_CONF, "utf8"));
      expect([...sidPrefixes.keys()].sort()).to.deep.equal(["ws1", "ws2", "ws3", "ws4"]);

      const instances = [...services].filter(([, block]) => scalar(block, "INSTANCE_ID") !== undefined);
      expect(instances.map(([, b]) => scalar(b, "INSTANCE_ID")).sort(), "INSTANCE_IDs").to.deep.equal([...sidPrefixes.keys()].sort());
      for (const [name, block] of instances) {
        const id = scalar(block, "INSTANCE_ID")!;
        const port = scalar(block, "PORT");
        // The sid prefix routes to an upstream whose one server is this service on its PORT.
        expect(upstreams.get(sidPrefixes.get(id)!), `upstream for ${id}`).to.deep.equal([`${name}:${port}`]);
        expect(upstreams.get("ws_cluster"), "ws_cluster").to.include(`${name}:${port}`);
        expect(scalar(block, "HOST"), `${name} HOST`).to.equal("0.0.0.0");
        expect(scalar(block, "REDIS_URL"), `${name} REDIS_URL`).to.equal("redis://redis:6379");

        const health = subBlock(block, "healthcheck");
        expect(health, `${name} healthcheck`).to.be.a("string");
        expect(health).to.contain("/readyz");
        expect(health).to.not.match(/\bdisable:\s*true/);

        const forced = Number(scalar(block, "FORCED_SHUTDOWN_AFTER_SEC"));
        expect(forced, `${name} FORCED_SHUTDOWN_AFTER_SEC default`).to.equal(1800);
        const grace = scalar(block, "stop_grace_period");
        expect(grace, `${name} stop_grace_period`).to.be.a("string");
        expect(durationSec(grace!), `${name} stop_grace_period ${grace} vs drain ${forced}s`).to.be.greaterThan(forced);
        expect(subBlock(block, "depends_on") ?? "", `${name} depends_on`).to.match(/redis:\s+condition:\s+service_healthy/);
        const address = scalar(block, "ipv4_address");
        expect(address, `${name} ipv4_address`).to.be.a("string");
        expect(address!.startsWith(`${subnet}.`), `${name} ${address} in ${subnet}.0/24`).to.equal(true);
        const host = Number(address!.split(".")[3]);
        expect(host >= rangeFirst && host <= rangeLast, `${name} ${address} outside ip_range`).to.equal(false);
        addresses.add(address!);
      }
      expect(addresses.size, "distinct instance addresses").to.equal(instances.length);
      expect(instances.map(([name]) => name).sort()).to.deep.equal(["ws1", "ws2", "ws3", "ws4"]);

      const nginx = services.get("nginx");
      expect(nginx, "nginx service").to.be.a("string");
      expect(nginx).to.match(/nginx\.conf:\/etc\/nginx\/nginx\.conf:ro/);
      expect(nginx).to.match(/(published: "?8080"?\s+target: 8080|target: 8080\s+published: "?8080"?|8080:8080)/);
      for (const [name] of instances) expect(subBlock(nginx!, "depends_on")).to.contain(`${name}:`);
      expect(subBlock(services.get("redis") ?? "", "healthcheck")).to.match(/redis-cli\s+- ping/);
    });

    it("builds an image that runs the service as a non-root user on port 8000, stopped with SIGTERM", async () => {
      const dockerfile = await readFile(path.join(ROOT, "Dockerfile"), "utf8");
      expect(dockerfile).to.match(/^FROM node:20-slim\b/m);
      expect(dockerfile).to.match(/^EXPOSE 8000\s*$/m);
      expect(dockerfile).to.match(/^STOPSIGNAL SIGTERM\s*$/m);
      expect(dockerfile).to.match(/^USER (?!root\b|0\b)\S+/m);
      expect(dockerfile).to.match(/HOST=0\.0\.0\.0/);
      expect(dockerfile).to.match(/npm ci --omit=dev/);
      // Everything it copies from the build context exists (COPY --from copies between stages).
      for (const m of dockerfile.matchAll(/^COPY\s+(?!--from=)(.+)\s+\S+\s*$/gm)) {
        for (const src of m[1]!.trim().split(/\s+/)) expect(existsSync(path.join(ROOT, src)), `COPY ${src}`).to.equal(true);
      }
    });
  });

  describe("startStack()", function () {
    this.timeout(120_000);
    let stack: Stack | undefined;
    afterEach(async function () {
      this.timeout(60_000);
      await stack?.stop({ graceMs: 5_000 });
      stack = undefined;
    });

    it("starts redis, ws1..ws4 and nginx on loopback, and stop() leaves no process running", async () => {
      stack = await startStack({ env: { PERIODIC_INTERVAL_SEC: "0", LOG_LEVEL: "warn", FORCED_SHUTDOWN_AFTER_SEC: "5" } });
      const s = stack;

      const viaNginx = await fetch(`${s.url}/healthz`);
      expect(viaNginx.status).to.equal(200);
      expect(((await viaNginx.json()) as { instance: string }).instance).to.match(/^ws[1-4]$/);
      for (let i = 0; i < INSTANCE_COUNT; i++) {
        const res = await fetch(`${s.instanceUrl(i)}/healthz`);
        expect(res.status).to.equal(200);
        const body = (await res.json()) as { instance: string; pid: number };
        expect(body.instance).to.equal(`ws${i + 1}`);
        expect(body.pid).to.equal(s.instances[i]!.pid);
        expect(s.instanceUrl(i)).to.equal(`http://127.0.0.1:${s.nginxPort + i + 1}`);
      }

      // Every process of the stack: instances, nginx master and workers, redis-server.
      expect(s.redis, "a redis-server of its own").to.not.equal(undefined);
      const redisPids = childPids(process.pid).filter((pid) => cmdline(pid).startsWith("redis-server") && cmdline(pid).includes(`:${s.redis!.port}`));
      expect(redisPids).to.have.length(1);
      const workers = childPids(s.nginxPid);
      expect(workers.length, "nginx workers").to.be.greaterThan(0);
      const pids = [...s.instances.map((i) => i.pid), s.nginxPid, ...workers, ...redisPids];
      for (const pid of pids) expect(alive(pid), `pid ${pid} alive before stop`).to.equal(true);
      const ports = [s.nginxPort, ...s.instances.map((i) => i.port), s.redis!.port];

      stack = undefined;
      await s.stop();
      expect(
        pids.filter(alive).map((pid) => `${pid} ${cmdline(pid)}`),
        "left running",
      ).to.deep.equal([]);
      for (const port of ports) expect(await canConnect(port), `port ${port} after stop`).to.equal(false);
      await s.stop(); // idempotent
    });
  });
});
