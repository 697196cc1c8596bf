import { execFile } from "node:child_process";
import dgram from "node:dgram";
import dnsPacket from "dns-packet";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect } from "chai";
import { Deployment, type IDeployment, type IStatefulSet, StatefulSet } from "kubernetes-models/apps/v1";
import { type IPodDisruptionBudget, PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, type IContainer, type IPodTemplateSpec, type IService, Namespace, Secret, Service } from "kubernetes-models/v1";
import ts from "typescript";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { startInstance, type InstanceProcess } from "../harness/instance.js";
import { NGINX_CONF, type NginxProcess, startNginx } from "../harness/nginx.js";
import { freePort, isFree } from "../harness/ports.js";
import { CONFIG_VARIABLES } from "../server/config.js";
import { sidPrefix } from "../server/realtime/socketio.js";
import { connectIo, connectWs, type IoClient } from "./helpers/clients.js";
import { pollingHandshake, pollingSend } from "./helpers/engine-io.js";

/**
 * deploy/kubernetes: every manifest valid against the Kubernetes OpenAPI
 * schemas (kubernetes-models, offline) with no unknown field (TypeScript's
 * excess-property check against the same models), the kustomization
 * complete, the invariants the service depends on (grace period, probes,
 * image and variables as in compose, selectors, the Secret), and the nginx
 * config: nginx -t, the repository's nginx.conf kept, and its routing run on
 * loopback against real instances, with a DNS server in CoreDNS's place.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DIR = path.join(ROOT, "deploy/kubernetes");
const run = promisify(execFile);

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: unknown }; [k: string]: unknown };
/** A document and where it came from. */
interface Manifest {
  file: string;
  obj: Obj;
}
const label = (m: Manifest) => `${m.file}: ${m.obj.kind}/${m.obj.metadata?.name}`;

const read = (file: string) => readFileSync(path.join(DIR, file), "utf8");

/** Every YAML document of a file, parse errors thrown with the file's name. */
function yamlDocuments(file: string): Obj[] {
  return parseAllDocuments(read(file)).map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${file} document ${i + 1}: ${doc.errors.map((e) => e.message).join("; ")}`);
    return doc.toJS() as Obj;
  });
}

/** kustomize's env file: KEY=VALUE lines, # comments; a bare KEY would be read from kustomize's own environment, so it is refused here. */
function parseEnvFile(text: string, file: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`${file}:${i + 1}: "${line}" has no "=" (kustomize would take its value from its own environment)`);
    const key = line.slice(0, eq);
    if (vars.has(key)) throw new Error(`${file}:${i + 1}: ${key} twice`);
    vars.set(key, line.slice(eq + 1));
  }
  return vars;
}

interface Kustomization {
  namespace: string;
  resources: string[];
  configMapGenerator: { name: string; envs?: string[]; files?: string[] }[];
}

/** What `kubectl apply -k` applies, assembled as kustomize does for this kustomization (namespace set; generated ConfigMaps without their hash suffix). */
function assemble(k: Kustomization): Manifest[] {
  const out: Manifest[] = [];
  for (const file of k.resources) for (const obj of yamlDocuments(file)) out.push({ file, obj });
  for (const g of k.configMapGenerator) {
    const data: Record<string, string> = {};
    for (const env of g.envs ?? []) for (const [key, value] of parseEnvFile(read(env), env)) data[key] = value;
    for (const file of g.files ?? []) data[path.basename(file)] = read(file);
    out.push({ file: `kustomization.yaml (configMapGenerator ${g.name})`, obj: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data } });
  }
  for (const m of out) if (m.obj.kind !== "Namespace") m.obj.metadata.namespace = k.namespace;
  return out;
}

/** The model class of an object's kind from kubernetes-models; undefined when it has none. */
async function modelOf(obj: Obj): Promise<(new (data: unknown) => { validate(): void }) | undefined> {
  try {
    const mod = (await import(`kubernetes-models/${obj.apiVersion}/${obj.kind}`)) as Record<string, new (data: unknown) => { validate(): void }>;
    return mod[obj.kind];
  } catch {
    return undefined;
  }
}

/** Schema problems of an object (kubernetes-models' validate()); [] when it passes. */
async function schemaProblems(obj: Obj): Promise<string[]> {
  const Model = await modelOf(obj);
  if (!Model) return [`no Kubernetes schema for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}

/**
 * Fields the schemas do not know (a misspelt `readinesProbe` passes the
 * JSON schemas, which allow extra properties; the API server drops or
 * refuses it). Each object becomes a literal typed as its kubernetes-models
 * interface, and TypeScript's excess-property check names every unknown one.
 * Returns one line a problem, prefixed with the object's label.
 */
const parsed = new Map<string, ts.SourceFile | undefined>();
function unknownFields(manifests: Manifest[]): string[] {
  const virtual = path.join(DIR, "__manifests__.ts"); // never written: the host serves it from memory
  const starts: number[] = [];
  let text = "";
  manifests.forEach((m, i) => {
    text += `import type { I${m.obj.kind} as T${i} } from "kubernetes-models/${m.obj.apiVersion}/${m.obj.kind}";\n`;
  });
  manifests.forEach((m, i) => {
    starts.push(text.length);
    text += `export const m${i}: T${i} = ${JSON.stringify(m.obj)};\n`;
  });
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, lang, ...rest) => {
    if (name === virtual) return ts.createSourceFile(name, text, lang);
    // Library and model declarations parsed once for every call.
    if (!parsed.has(name)) parsed.set(name, getSourceFile(name, lang, ...rest));
    return parsed.get(name);
  };
  host.fileExists = (name) => name === virtual || fileExists(name);
  const program = ts.createProgram([virtual], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const at = d.start ?? 0;
    const index = starts.findLastIndex((s) => s <= at);
    const where = index >= 0 ? label(manifests[index]!) : "imports";
    return `${where}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
  });
}

/** Runs a command; resolves with its output, or rejects with its stderr in the message. */
async function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(cmd, args, { cwd: opts.cwd ?? ROOT, timeout: 30_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${(e.stderr || e.stdout || e.message).trim()}`);
  }
}

const code = (conf: string) => conf.replace(/#[^\n]*/g, "");

/** The statements of an nginx config, comments dropped and whitespace collapsed: `{`, `}` and `;` end one. */
const statements = (conf: string): string[] =>
  code(conf)
    .split(/[{};]/)
    .map((s) => s.replace(/\s+/g, " ").trim())
    .filter(Boolean);

/**
 * The k8s nginx.conf made runnable here: the cluster DNS becomes `dns`
 * (host:port), the pods' port 8000 becomes `podPort`, `listen 8080` moves to
 * loopback, and temp files go to `tmpDir`. Throws when a substitution finds
 * nothing to change.
 */
function renderK8sNginx(source: string, o: { dns: string; podPort: number; listenPort: number; tmpDir: string }): string {
  const subs: [RegExp, string][] = [
    [/\bresolver\s+kube-dns\.kube-system\.svc\.cluster\.local\b/, `resolver ${o.dns}`],
    [/(proxy_pass\s+http:\/\/\$\w+):8000;/g, `$1:${o.podPort};`],
    [/\blisten\s+8080\b/, `listen 127.0.0.1:${o.listenPort}`],
    [/^http\s*\{/m, `http {\n${["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `    ${k}_temp_path ${o.tmpDir}/${k}_temp;`).join("\n")}`],
  ];
  let out = source;
  for (const [re, to] of subs) {
    if (!re.test(out)) throw new Error(`deploy/kubernetes/nginx.conf: nothing matches ${re}`);
    out = out.replace(re, to);
  }
  return out;
}

/** A pod template's containers. */
const containersOf = (t: IPodTemplateSpec | undefined): IContainer[] => t?.spec?.containers ?? [];

/** Seconds a container's preStop waits: the sleep action, `sleep N`, or node's setTimeout(..., ms). */
function preStopSeconds(c: IContainer): number {
  const pre = c.lifecycle?.preStop;
  if (pre?.sleep) return pre.sleep.seconds;
  const cmd = pre?.exec?.command ?? [];
  if (cmd[0] === "sleep") return Number(cmd[1]);
  const ms = /setTimeout\([^,]*,\s*(\d+)\s*\)/.exec(cmd.join(" "))?.[1];
  if (ms) return Number(ms) / 1000;
  throw new Error(`container ${c.name}: no preStop wait found`);
}

/** Whether a selector (matchLabels, or a Service's plain map) selects pods with these labels. */
const selects = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** compose's `${VAR:-default}` -> default; a literal stays. */
const composeDefault = (value: unknown): string => {
  const text = String(value ?? "");
  const m = /^\$\{\w+:?-(.*)\}$/.exec(text);
  return m ? m[1]! : text;
};

/**
 * A DNS server on loopback UDP standing in for CoreDNS: A queries for a name
 * in `records` get its addresses (TTL 5 s) in a random order (the default
 * Corefile's loadbalance plugin), every other name NXDOMAIN.
 */
async function startDns(records: Map<string, string[]>): Promise<{ address: string; queries: string[]; close(): Promise<void> }> {
  const socket = dgram.createSocket("udp4");
  const queries: string[] = [];
  socket.on("message", (msg, peer) => {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = query.questions?.[0];
    if (!question) return;
    const name = question.name.toLowerCase();
    queries.push(name);
    const addrs = (question.type === "A" ? (records.get(name) ?? []) : [])
      .map((ip) => ({ ip, key: Math.random() }))
      .sort((a, b) => a.key - b.key)
      .map((a) => a.ip);
    const response = dnsPacket.encode({
      type: "response",
      id: query.id,
      // Recursion desired and available; rcode NOERROR, or NXDOMAIN (3) for a name it does not have.
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (records.has(name) ? 0 : 3),
      questions: [question],
      answers: addrs.map((data) => ({ type: "A" as const, class: "IN" as const, name: question.name, ttl: 5, data })),
    });
    socket.send(response, peer.port, peer.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => resolve());
  });
  return {
    address: `127.0.0.1:${socket.address().port}`,
    queries,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

describe("Kubernetes manifests (deploy/kubernetes)", function () {
  this.timeout(30_000);

  const kustomization = parseYaml(read("kustomization.yaml")) as Kustomization;
  const manifests = assemble(kustomization);
  const objects = manifests.map((m) => m.obj);
  const named = <T>(is: (o: unknown) => o is T, name: string): T => {
    const found = (objects as unknown[]).filter(is).find((o) => (o as Obj).metadata.name === name);
    if (!found) throw new Error(`no ${name} of that kind in deploy/kubernetes`);
    return found;
  };
  const isConfigMap = (o: unknown): o is Obj & { data: Record<string, string> } => ConfigMap.is(o);
  const deployment = named<IDeployment>(Deployment.is, "ws-broadcast");
  const container = containersOf(deployment.spec?.template).find((c) => c.name === "ws-broadcast")!;
  const config = named(isConfigMap, "ws-broadcast-config").data;
  const nginxConf = named(isConfigMap, "ws-broadcast-nginx").data["nginx.conf"]!;
  const envNames = (container.env ?? []).map((e) => e.name);

  describe("schemas", () => {
    it("every YAML document under deploy/kubernetes passes its Kubernetes OpenAPI schema", async () => {
      const files = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml");
      const all: Manifest[] = [
        ...manifests,
        ...files.filter((f) => !kustomization.resources.includes(f)).flatMap((file) => yamlDocuments(file).map((obj) => ({ file, obj }))),
      ];
      const problems: string[] = [];
      for (const m of all) for (const p of await schemaProblems(m.obj)) problems.push(`${label(m)}: ${p}`);
      expect(problems).to.deep.equal([]);
      expect(all.map((m) => m.obj.kind).sort()).to.include.members(["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service", "StatefulSet"]);
      console.log(`      ${all.length} objects validated: ${[...new Set(all.map((m) => m.obj.kind))].sort().join(", ")}`);
    });

    it("and has no field the schemas do not know (TypeScript's excess-property check against the same models)", () => {
      const secretExample = yamlDocuments("secret.example.yaml").map((obj) => ({ file: "secret.example.yaml", obj }));
      expect(unknownFields([...manifests, ...secretExample])).to.deep.equal([]);
    });

    it("refuses a broken object both ways, so neither check can pass vacuously", async () => {
      const broken = structuredClone(deployment) as unknown as Obj;
      const c = (broken as IDeployment).spec!.template.spec!.containers[0]!;
      (c.ports![0] as { containerPort: unknown }).containerPort = "8000"; // a string where the schema wants an integer
      expect((await schemaProblems(broken)).join()).to.match(/containerPort must be integer/);
      expect(await schemaProblems({ apiVersion: "apps/v1", kind: "Deploymnet", metadata: { name: "x" } })).to.deep.equal([
        "no Kubernetes schema for apps/v1 Deploymnet",
      ]);

      const typo = structuredClone(deployment) as unknown as Obj;
      const t = (typo as IDeployment).spec!.template.spec!.containers[0]! as IContainer & { readinesProbe?: unknown };
      t.readinesProbe = t.readinessProbe;
      expect(await schemaProblems(typo), "the JSON schemas allow unknown fields").to.deep.equal([]);
      const found = unknownFields([{ file: "typo.yaml", obj: typo }]);
      expect(found).to.have.length(1);
      expect(found[0]).to.match(/^typo\.yaml: Deployment\/ws-broadcast: .*'"readinesProbe"' does not exist in type 'IContainer'/);
    });
  });

  describe("kustomization.yaml", () => {
    it("lists every manifest and config file here, each of them there, and leaves the secret example out", () => {
      const listed = [...kustomization.resources, ...kustomization.configMapGenerator.flatMap((g) => [...(g.envs ?? []), ...(g.files ?? [])])];
      for (const file of listed) expect(existsSync(path.join(DIR, file)), `${file} (listed)`).to.equal(true);
      const here = readdirSync(DIR).filter((f) => !["kustomization.yaml", "README.md", "secret.example.yaml"].includes(f));
      expect([...listed].sort(), "listed = present").to.deep.equal(here.sort());
      expect(listed).to.not.include("secret.example.yaml");
      expect(kustomization.namespace).to.equal(named(Namespace.is, kustomization.namespace).metadata?.name);
    });

    it("renders with `kubectl kustomize` into the same objects (when kubectl is installed)", async function () {
      let stdout: string;
      try {
        stdout = (await sh("kubectl", ["kustomize", DIR])).stdout;
      } catch (err) {
        if (/ENOENT|not found/.test((err as Error).message)) this.skip();
        throw err;
      }
      const rendered = parseAllDocuments(stdout).map((d) => d.toJS() as Obj);
      // Generated names carry a hash suffix; references to them follow it.
      const unhash = (o: Obj) => JSON.parse(JSON.stringify(o).replace(/"(ws-broadcast-(?:config|nginx))-[a-z0-9]{10}"/g, '"$1"')) as Obj;
      const key = (o: Obj) => `${o.kind}/${o.metadata.name}`;
      const ours = new Map(objects.map((o) => [key(o), o]));
      expect(rendered.map(unhash).map(key).sort()).to.deep.equal([...ours.keys()].sort());
      for (const o of rendered.map(unhash)) {
        const mine = structuredClone(ours.get(key(o))!);
        expect(o, key(o)).to.deep.equal(mine);
      }
      for (const o of rendered) expect(await schemaProblems(o), key(o)).to.deep.equal([]);
    });
  });

  describe("invariants", () => {
    it("gives a pod longer to stop than its preStop wait, the drain deadline and the close spread", () => {
      const grace = deployment.spec!.template.spec!.terminationGracePeriodSeconds!;
      const preStop = preStopSeconds(container);
      const forced = Number(config.FORCED_SHUTDOWN_AFTER_SEC);
      const spread = Number(config.DRAIN_CLOSE_SPREAD_SEC || 0);
      expect(preStop, "a short preStop wait").to.be.within(3, 30);
      expect(forced).to.be.greaterThan(0);
      expect(grace, `terminationGracePeriodSeconds vs ${preStop} + ${forced} + ${spread}`).to.be.greaterThan(preStop + forced + spread);
      // The same for nginx: its preStop wait and worker_shutdown_timeout.
      const nginx = named<IDeployment>(Deployment.is, "ws-broadcast-nginx");
      const shutdown = /\bworker_shutdown_timeout\s+(\d+)s\s*;/.exec(code(nginxConf))?.[1];
      expect(shutdown, "worker_shutdown_timeout in seconds").to.be.a("string");
      const nginxPreStop = preStopSeconds(containersOf(nginx.spec?.template)[0]!);
      expect(nginx.spec!.template.spec!.terminationGracePeriodSeconds).to.be.greaterThan(nginxPreStop + Number(shutdown));
    });

    it("probes readiness on /readyz and liveness (and start-up) on /healthz, at the container port that PORT names", () => {
      const port = container.ports?.find((p) => p.containerPort === Number(config.PORT));
      expect(port, `a container port ${config.PORT} (PORT)`).to.not.equal(undefined);
      const probeAt = (probe: { httpGet?: { path?: string; port: number | string } } | undefined) => ({
        path: probe?.httpGet?.path,
        port: probe?.httpGet?.port,
      });
      for (const [probe, want] of [
        [container.readinessProbe, "/readyz"],
        [container.livenessProbe, "/healthz"],
        [container.startupProbe, "/healthz"],
      ] as const) {
        const at = probeAt(probe);
        expect(at.path).to.equal(want);
        expect([port!.name, port!.containerPort]).to.include(at.port);
      }
      // Liveness must not kill a slow but live instance: a minute of failures at least.
      const live = container.livenessProbe!;
      expect((live.periodSeconds ?? 10) * (live.failureThreshold ?? 3)).to.be.at.least(60);
      expect(config.HOST).to.equal("0.0.0.0");
    });

    it("runs the image the repository's Dockerfile builds, and nginx and Redis as compose does", () => {
      const compose = parseYaml(readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), { merge: true }) as {
        services: Record<string, { build?: string | { context?: string }; image?: string }>;
      };
      const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { name: string };
      expect(container.image).to.equal(`${pkg.name}:latest`);
      expect(container.imagePullPolicy, "a local :latest build is not pulled").to.equal("IfNotPresent");
      for (const name of ["ws1", "ws2", "ws3", "ws4"]) {
        const s = compose.services[name]!;
        const context = typeof s.build === "string" ? s.build : s.build?.context;
        expect(context, `${name} builds the repository's Dockerfile`).to.equal(".");
        if (s.image !== undefined) expect(s.image, `${name} image`).to.equal(container.image);
      }
      expect(existsSync(path.join(ROOT, "Dockerfile"))).to.equal(true);
      expect(containersOf(named<IDeployment>(Deployment.is, "ws-broadcast-nginx").spec?.template)[0]!.image).to.equal(compose.services.nginx!.image);
      expect(containersOf(named<IStatefulSet>(StatefulSet.is, "redis").spec?.template)[0]!.image).to.equal(compose.services.redis!.image);
    });

    it("sets every variable the service reads, as compose does by default (the pod's IP and the Secret aside)", () => {
      const fromPod = new Map((container.env ?? []).map((e) => [e.name, e]));
      const fromConfigMap = (container.envFrom ?? []).map((e) => e.configMapRef?.name);
      expect(fromConfigMap).to.deep.equal(["ws-broadcast-config"]);
      const set = new Set([...Object.keys(config), ...fromPod.keys()]);
      const wanted = [...new Set([...CONFIG_VARIABLES, "REDIS_CLUSTER_NODES"])];
      expect(
        wanted.filter((k) => !set.has(k)),
        "variables the pods do not get",
      ).to.deep.equal([]);
      expect(
        [...set].filter((k) => !wanted.includes(k)),
        "variables the service does not read",
      ).to.deep.equal([]);
      expect(
        Object.keys(config).filter((k) => fromPod.has(k)),
        "set twice (env wins over the ConfigMap)",
      ).to.deep.equal([]);
      expect(config.REDIS_URL === "" || config.REDIS_CLUSTER_NODES === "", "REDIS_URL or REDIS_CLUSTER_NODES, not both").to.equal(true);

      const compose = parseYaml(readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8"), { merge: true }) as {
        services: Record<string, { environment?: Record<string, unknown> }>;
      };
      const composeEnv = compose.services.ws1!.environment ?? {};
      // TRUST_PROXY names each topology's own proxies (compose: nginx's fixed addresses; Kubernetes: the pod network).
      const different = new Set(["INSTANCE_ID", "ADMIN_TOKEN", "AUTH_JWT_SECRET", "TRUST_PROXY"]);
      const mismatched = Object.keys(composeEnv)
        .filter((k) => !different.has(k))
        .filter((k) => config[k] !== composeDefault(composeEnv[k]))
        .map((k) => `${k}: compose ${JSON.stringify(composeDefault(composeEnv[k]))}, config.env ${JSON.stringify(config[k])}`);
      expect(mismatched).to.deep.equal([]);
    });

    it("names each instance by its pod IP, which the nginx map turns into the pod's DNS name and nothing else does", () => {
      const id = container.env?.find((e) => e.name === "INSTANCE_ID");
      expect(id?.valueFrom?.fieldRef?.fieldPath).to.equal("status.podIP");
      const map = /map\s+\$arg_sid\s+\$session_pod\s*\{[^}]*"~([^"]+)"\s+"([^"]+)"\s*;/.exec(code(nginxConf));
      expect(map, "map $arg_sid $session_pod with one regex entry").to.not.equal(null);
      const re = new RegExp(map![1]!);
      const name = (sid: string) => {
        const m = re.exec(sid);
        return m ? map![2]!.replace(/\$\{(\w+)\}/g, (_x, g: string) => m.groups?.[g] ?? "") : undefined;
      };
      const ns = kustomization.namespace;
      expect(name(`${sidPrefix("10.1.2.3")}.Jd9x`)).to.equal(`10-1-2-3.ws-broadcast-pods.${ns}.svc.cluster.local`);
      expect(name(`${sidPrefix("192.168.100.254")}.a.b`)).to.equal(`192-168-100-254.ws-broadcast-pods.${ns}.svc.cluster.local`);
      for (const forged of ["ws1.x", "10-1-2.x", "10-1-2-3-4.x", "a-b-c-d.x", "10-1-2-3", "x10-1-2-3.x", "10.1.2.3.x", "1000-1-2-3.x", ""]) {
        expect(name(forged), forged).to.equal(undefined);
      }
      // The names nginx resolves are this kustomization's Services, in its namespace.
      const pods = named<IService>(Service.is, "ws-broadcast-pods");
      const ready = named<IService>(Service.is, "ws-broadcast-ready");
      expect(pods.spec?.clusterIP).to.equal("None");
      expect(pods.spec?.publishNotReadyAddresses, "draining pods keep their names").to.equal(true);
      expect(ready.spec?.clusterIP).to.equal("None");
      expect(ready.spec?.publishNotReadyAddresses ?? false, "new sessions: ready pods only").to.equal(false);
      const readyNames = [...code(nginxConf).matchAll(/\bws-broadcast-ready\.([a-z0-9-]+)\.svc\.cluster\.local\b/g)].map((m) => m[1]);
      expect(readyNames.length).to.be.greaterThan(0);
      expect(new Set(readyNames)).to.deep.equal(new Set([ns]));
      // Every proxy_pass goes to port 8000, the Services' port and PORT.
      const ports = [...code(nginxConf).matchAll(/proxy_pass\s+http:\/\/\$\w+:(\d+);/g)].map((m) => Number(m[1]));
      expect(ports.length).to.equal([...code(nginxConf).matchAll(/\bproxy_pass\b/g)].length);
      for (const svc of [pods, ready]) for (const p of ports) expect(svc.spec?.ports?.map((x) => x.port)).to.include(p);
      expect(new Set(ports)).to.deep.equal(new Set([Number(config.PORT)]));
    });

    it("selects the right pods: each Service and PodDisruptionBudget its workload's, and only those", () => {
      const workloads = objects.filter((o) => Deployment.is(o) || StatefulSet.is(o)) as (IDeployment | IStatefulSet)[];
      const podLabels = (w: IDeployment | IStatefulSet) => w.spec?.template.metadata?.labels;
      for (const w of workloads) expect(selects(w.spec?.selector.matchLabels, podLabels(w)), `${w.metadata?.name} selects its template`).to.equal(true);
      const selected = (selector: Record<string, string> | undefined) =>
        workloads
          .filter((w) => selects(selector, podLabels(w)))
          .map((w) => w.metadata?.name ?? "")
          .sort();
      const expected: Record<string, string[]> = {
        "Service/ws-broadcast-ready": ["ws-broadcast"],
        "Service/ws-broadcast-pods": ["ws-broadcast"],
        "Service/ws-broadcast": ["ws-broadcast-nginx"],
        "Service/redis": ["redis"],
        "PodDisruptionBudget/ws-broadcast": ["ws-broadcast"],
        "PodDisruptionBudget/ws-broadcast-nginx": ["ws-broadcast-nginx"],
      };
      const actual: Record<string, string[]> = {};
      for (const s of objects.filter(Service.is) as IService[]) actual[`Service/${s.metadata?.name}`] = selected(s.spec?.selector);
      for (const p of objects.filter(PodDisruptionBudget.is) as IPodDisruptionBudget[]) {
        actual[`PodDisruptionBudget/${p.metadata?.name}`] = selected(p.spec?.selector?.matchLabels);
      }
      expect(actual).to.deep.equal(expected);
      // A Service's target port is a port its pods name.
      for (const s of objects.filter(Service.is) as IService[]) {
        const pods = workloads.filter((w) => selects(s.spec?.selector, podLabels(w)));
        for (const p of s.spec?.ports ?? []) {
          for (const w of pods) {
            const names = containersOf(w.spec?.template).flatMap((c) => (c.ports ?? []).flatMap((cp) => [cp.name, cp.containerPort]));
            expect(names, `${s.metadata?.name} -> ${w.metadata?.name}`).to.include(p.targetPort);
          }
        }
      }
      // One eviction at a time, and never the last pod.
      for (const p of objects.filter(PodDisruptionBudget.is) as IPodDisruptionBudget[]) expect(p.spec?.maxUnavailable).to.equal(1);
      expect(deployment.spec?.replicas).to.be.greaterThan(1);
    });

    it("takes ADMIN_TOKEN from the Secret (required) that secret.example.yaml shows, never from the ConfigMap", () => {
      const token = container.env?.find((e) => e.name === "ADMIN_TOKEN")?.valueFrom?.secretKeyRef;
      expect(token?.name).to.equal("ws-broadcast-secrets");
      expect(token?.key).to.equal("ADMIN_TOKEN");
      expect(token?.optional ?? false, "pods wait for the Secret").to.equal(false);
      expect(config).to.not.have.property("ADMIN_TOKEN");
      expect(config).to.not.have.property("AUTH_JWT_SECRET");
      expect(objects.filter(Secret.is), "no Secret is applied").to.deep.equal([]);
      const [example] = yamlDocuments("secret.example.yaml");
      expect(Secret.is(example)).to.equal(true);
      expect(example!.metadata.name).to.equal(token?.name);
      expect(example!.metadata.namespace).to.equal(kustomization.namespace);
      const data = (example as { stringData?: Record<string, string> }).stringData ?? {};
      expect(data.ADMIN_TOKEN).to.match(/^replace-me/);
      for (const e of container.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref) expect(ref.name, e.name).to.equal("ws-broadcast-secrets");
      }
      expect(envNames).to.include.members(["INSTANCE_ID", "ADMIN_TOKEN", "AUTH_JWT_SECRET"]);
    });
  });

  describe("nginx.conf (deploy/kubernetes)", () => {
    let tmp: string;
    before(async () => {
      tmp = await mkdtemp(path.join(os.tmpdir(), "k8s-nginx-"));
    });
    after(async () => {
      await rm(tmp, { recursive: true, force: true });
    });

    it("is the file kustomize puts into the ConfigMap nginx mounts", () => {
      expect(nginxConf).to.equal(read("nginx.conf"));
      const nginx = named<IDeployment>(Deployment.is, "ws-broadcast-nginx");
      const mount = containersOf(nginx.spec?.template)[0]!.volumeMounts?.find((m) => m.mountPath === "/etc/nginx/nginx.conf");
      expect(mount?.subPath).to.equal("nginx.conf");
      const volume = nginx.spec?.template.spec?.volumes?.find((v) => v.name === mount?.name);
      expect(volume?.configMap?.name).to.equal("ws-broadcast-nginx");
    });

    it("passes nginx -t as shipped (the cluster DNS name resolving through /etc/hosts, as in a pod)", async function () {
      if (process.getuid?.() !== 0) this.skip(); // unshare -m + mount --bind need root
      const hosts = path.join(tmp, "hosts");
      await writeFile(hosts, "127.0.0.1 localhost kube-dns.kube-system.svc.cluster.local\n");
      const conf = path.join(tmp, "shipped.conf");
      await writeFile(conf, read("nginx.conf"));
      // A private mount namespace: /etc/hosts is replaced for nginx -t only.
      const script = 'mount --bind "$1" /etc/hosts && exec nginx -t -c "$2" -g "pid $3/nginx.pid;" -e "$3/err.log"';
      const { stderr } = await sh("unshare", ["-m", "sh", "-c", script, "sh", hosts, conf, tmp]);
      expect(stderr).to.match(/test is successful/);
    });

    it("passes nginx -t rendered for loopback", async () => {
      const conf = path.join(tmp, "rendered.conf");
      await writeFile(conf, renderK8sNginx(read("nginx.conf"), { dns: "127.0.0.1:53", podPort: 8000, listenPort: 8080, tmpDir: tmp }));
      const { stderr } = await sh("nginx", ["-t", "-c", conf, "-g", `pid ${tmp}/nginx.pid;`, "-e", `${tmp}/err.log`]);
      expect(stderr).to.match(/test is successful/);
    });

    it("keeps every directive of the repository's nginx.conf but its routing (limits, JSON errors, timeouts, upgrade)", () => {
      const shipped = statements(readFileSync(NGINX_CONF, "utf8"));
      const k8s = new Set(statements(read("nginx.conf")));
      // Routing to ws1..ws4 (upstreams, the sid map, proxy_pass) and worker_processes are what differ.
      const routing = (s: string) =>
        /\bws(_cluster|\d)\b|\$engine_upstream\b|^(upstream|least_conn|zone|keepalive|keepalive_timeout|proxy_pass|worker_processes)\b/.test(s);
      const missing = shipped.filter((s) => !routing(s) && !k8s.has(s));
      expect(missing, "in nginx.conf, not in deploy/kubernetes/nginx.conf").to.deep.equal([]);
    });
  });

  describe("nginx routing on loopback: two instances as pods, a DNS server as CoreDNS", function () {
    this.timeout(90_000);
    const ns = kustomization.namespace;
    const pods = ["127.0.0.2", "127.0.0.3"];
    const podName = (ip: string) => `${ip.replace(/\./g, "-")}.ws-broadcast-pods.${ns}.svc.cluster.local`;
    const readyName = `ws-broadcast-ready.${ns}.svc.cluster.local`;
    const records = new Map<string, string[]>([[readyName, pods], ...pods.map((ip): [string, string[]] => [podName(ip), [ip]])]);
    const stops: (() => Promise<unknown>)[] = [];
    const clients: IoClient[] = [];
    let instances: InstanceProcess[] = [];
    let url: string;
    let tmp: string;

    before(async function () {
      this.timeout(90_000);
      tmp = await mkdtemp(path.join(os.tmpdir(), "k8s-route-"));
      stops.push(() => rm(tmp, { recursive: true, force: true }));
      const dns = await startDns(records);
      stops.push(() => dns.close());
      // Every pod listens on the same port, as in the cluster.
      let podPort = 0;
      for (let i = 0; i < 20 && podPort === 0; i++) {
        const p = await freePort(pods[0]);
        if (await isFree(p, pods[1])) podPort = p;
      }
      expect(podPort, "a port free on both pod addresses").to.be.greaterThan(0);
      const starting = pods.map((ip) =>
        startInstance({
          env: {
            HOST: ip,
            PORT: String(podPort),
            INSTANCE_ID: ip,
            PERIODIC_INTERVAL_SEC: "0",
            FORCED_SHUTDOWN_AFTER_SEC: "60",
            TRUST_PROXY: "127.0.0.1",
            REDIS_URL: "",
          },
        }),
      );
      const settled = await Promise.allSettled(starting);
      for (const s of settled) if (s.status === "fulfilled") stops.push(() => s.value.stop(5_000));
      const failed = settled.find((s) => s.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      instances = settled.map((s) => (s as PromiseFulfilledResult<InstanceProcess>).value);

      const listenPort = await freePort();
      const confPath = path.join(tmp, "nginx.conf");
      await writeFile(confPath, renderK8sNginx(read("nginx.conf"), { dns: dns.address, podPort, listenPort, tmpDir: tmp }));
      const nginx: NginxProcess = await startNginx({ confPath, tmpDir: tmp, port: listenPort, onExit: () => {} });
      stops.push(() => nginx.stop());
      url = `http://127.0.0.1:${listenPort}`;
    });
    after(async function () {
      this.timeout(30_000);
      for (const c of clients) c.close();
      for (const stop of stops.reverse()) await stop().catch(() => {});
    });

    /** `n` sessions through nginx, one after the other (new sessions arrive spread over time, not as one burst). */
    const connect = async (n: number, transports: ("polling" | "websocket")[]) => {
      const opened: { c: IoClient; instance: string }[] = [];
      for (let i = 0; i < n; i++) {
        const c = await connectIo(url, { transports });
        clients.push(c);
        opened.push({ c, instance: ((await c.next("welcome")) as { instance: string }).instance });
      }
      return opened;
    };

    it("spreads new sessions over the ready pods and keeps each polling session on the pod its sid names", async () => {
      const sessions = await connect(20, ["polling"]);
      const per: Record<string, number> = {};
      for (const { c, instance } of sessions) {
        per[instance] = (per[instance] ?? 0) + 1;
        expect(c.socket.io.engine.id.startsWith(`${sidPrefix(instance)}.`), `${c.socket.io.engine.id} on ${instance}`).to.equal(true);
      }
      console.log(`      sessions per pod: ${JSON.stringify(per)}`);
      expect(Object.keys(per).sort()).to.deep.equal(pods);
      // Several polls a session: each must reach its owner (an unknown sid would end the session).
      for (let round = 0; round < 3; round++) {
        const acks = await Promise.all(sessions.map(({ c }) => c.socket.timeout(5_000).emitWithAck("message", `round ${round}`)));
        expect(acks.every((a: { ok: boolean }) => a.ok)).to.equal(true);
      }
      for (const { c } of sessions) expect(c.socket.connected).to.equal(true);
    });

    it("answers a sid naming no pod 502 NO_INSTANCE, and sends any other sid shape to a ready pod (400 there)", async () => {
      const ghost = await pollingSend(url, "127-0-0-9.nosuchsession", "40");
      expect(ghost.status).to.equal(502);
      expect(JSON.parse(ghost.body)).to.deep.include({ code: "NO_INSTANCE" });
      for (const sid of ["ws1.abc", "127-0-0-2-1.abc", "evil.example.com:80.abc"]) {
        const res = await pollingSend(url, sid, "40");
        expect(res.status, sid).to.equal(400);
      }
      const opened = await pollingHandshake(url);
      expect(opened.status).to.equal(200);
      expect(pods.map(sidPrefix).some((p) => opened.sid?.startsWith(`${p}.`))).to.equal(true);
      // Closed through nginx by its sid, so no session is left to outlast the test.
      expect((await pollingSend(url, opened.sid!, "1")).status).to.equal(200);
    });

    it("keeps a draining pod's sessions on it and sends every new session to the live one", async () => {
      const [draining, live] = instances as [InstanceProcess, InstanceProcess];
      const before = await connect(16, ["polling"]);
      const onDraining = before.filter((s) => s.instance === draining.id);
      expect(onDraining.length, "sessions on the pod about to drain").to.be.greaterThan(0);
      draining.signal("SIGTERM");
      // Its polling sessions hear of the drain through nginx, by the pod's name.
      await Promise.all(onDraining.map(({ c }) => c.next("notification", (n: { type: string }) => n.type === "draining", 10_000)));
      // The DNS still lists it as ready (as within a cache's lifetime): nginx moves its 503s on.
      const fresh = await connect(12, ["polling", "websocket"]);
      expect(fresh.map((s) => s.instance)).to.deep.equal(fresh.map(() => live.id));
      const ws = await connectWs(`${url.replace(/^http/, "ws")}/ws?format=json`);
      try {
        expect((await ws.nextJson<{ instance: string }>("welcome")).instance).to.equal(live.id);
      } finally {
        ws.close();
      }
      // ...while the sessions it holds still reach it.
      const acks = await Promise.all(onDraining.map(({ c }) => c.socket.timeout(5_000).emitWithAck("message", "still here")));
      expect(acks.every((a: { ok: boolean }) => a.ok)).to.equal(true);
      for (const { c } of onDraining) expect(c.socket.connected).to.equal(true);
    });
  });
});
