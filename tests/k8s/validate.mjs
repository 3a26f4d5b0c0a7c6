// Offline validation of deploy/kubernetes (run through check_kubernetes.sh).
//
//   node validate.mjs [--dir DIR] [--rendered FILE]
//
// 1. Every document of every file in kustomization.yaml's resources, plus the ConfigMap its
//    configMapGenerator makes, parsed as Kubernetes parses YAML (1.1, duplicate keys refused):
//    a. .validate() of the matching kubernetes-models class (JSON schema: types, required
//       fields, enums, formats). ServiceMonitor: @kubernetes-models/prometheus-operator.
//    b. TypeScript excess-property check: each document becomes an object literal typed with
//       the model's interface and is compiled with tsc (strict), which refuses unknown fields
//       at any depth (the JSON schemas allow them) and wrong types.
// 2. The rendered stream of `kubectl kustomize` (--rendered), when given: a. and b. again on
//    what would be applied (labels, namespace and generated names included).
// 3. Consistency checks between the objects and the egressd config (non-root, read-only root
//    filesystem, probes, ports, selectors, NLB annotations, drain timing, ...).
// 4. With EGRESSD_BIN set: `egressd --check-config` on the ConfigMap's egressd.yaml, with the
//    container's EGRESSD_* variables applied.
// Exit status 0 when everything holds, 1 otherwise (every problem is printed).

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");

// ---------------------------------------------------------------------------------------------
// Arguments and reporting

const args = process.argv.slice(2);
function option(name) {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  if (i + 1 >= args.length) usage(`${name} needs a value`);
  return args[i + 1];
}
function usage(msg) {
  console.error(`validate.mjs: ${msg}\nusage: node validate.mjs [--dir DIR] [--rendered FILE]`);
  process.exit(2);
}
for (let i = 0; i < args.length; i += 2) {
  if (!["--dir", "--rendered"].includes(args[i])) usage(`unknown argument ${args[i]}`);
}
const dir = path.resolve(option("--dir") ?? path.join(repo, "deploy/kubernetes"));
const renderedFile = option("--rendered");

const problems = [];
let yamlBroken = false; // a document could not be read: skip the "missing object" checks
const rel = (p) => {
  const r = path.relative(process.cwd(), p);
  return r.startsWith("..") ? p : r;
};
// where: "file:line" or a description; what: "Kind/name"; field: dotted path or "".
function problem(where, what, field, message) {
  problems.push(`${where}: ${what}${field ? `: ${field}` : ""}: ${message}`);
}
const fieldPath = (segs) =>
  segs.reduce((s, k) => (typeof k === "number" ? `${s}[${k}]` : s ? `${s}.${k}` : String(k)), "");

// ---------------------------------------------------------------------------------------------
// YAML loading with positions

// Kubernetes reads manifests with a YAML 1.1 reader (0444 is octal, yes/no/on/off are booleans).
const K8S_YAML = { version: "1.1", uniqueKeys: true, prettyErrors: true };

// One parsed document: { file, index, object, doc (yaml Document), lines (LineCounter) }.
function loadYamlFile(file, label = rel(file)) {
  const text = fs.readFileSync(file, "utf8");
  const lines = new YAML.LineCounter();
  const docs = YAML.parseAllDocuments(text, { ...K8S_YAML, lineCounter: lines });
  const out = [];
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, index) => {
    for (const e of [...doc.errors, ...doc.warnings]) {
      const line = e.linePos?.[0]?.line ?? "?";
      yamlBroken = true;
      const msg = e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
      problem(`${label}:${line}`, `document ${index + 1}`, "", `YAML: ${msg}`);
    }
    if (doc.errors.length) return;
    const object = doc.toJS({ maxAliasCount: 100 });
    if (object === null || object === undefined) return; // empty document (e.g. after ---)
    out.push({ file, label, index, object, doc, lines });
  });
  return out;
}

// Line of the node at a path (the key's line for a mapping entry), else of the nearest parent.
function lineOf(entry, segs) {
  if (!entry.doc) return undefined;
  let node = entry.doc.contents;
  let best = node?.range?.[0];
  for (const seg of segs) {
    if (YAML.isMap(node)) {
      const pair = node.items.find((p) => (YAML.isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) break;
      if (pair.key?.range) best = pair.key.range[0];
      node = pair.value;
    } else if (YAML.isSeq(node) && typeof seg === "number" && node.items[seg]) {
      node = node.items[seg];
      if (node?.range) best = node.range[0];
    } else break;
  }
  return best === undefined ? undefined : entry.lines.linePos(best).line;
}
const whereOf = (entry, segs = []) => {
  const line = lineOf(entry, segs);
  return line === undefined ? entry.label : `${entry.label}:${line}`;
};
const nameOf = (o) => `${o?.kind ?? "?"}/${o?.metadata?.name ?? "?"}`;

// ---------------------------------------------------------------------------------------------
// The kustomization: resources and generated ConfigMaps (what `kubectl kustomize` would read)

const KUSTOMIZE_FIELDS = new Set([
  "apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix", "labels",
  "commonLabels", "commonAnnotations", "resources", "components", "configMapGenerator",
  "secretGenerator", "generatorOptions", "images", "patches", "replicas", "replacements",
  "crds", "openapi", "buildMetadata", "sortOptions", "helmCharts", "helmGlobals",
  "transformers", "generators", "validators", "configurations", "patchesStrategicMerge",
  "patchesJson6902", "vars", "bases",
]);

function loadKustomization() {
  const file = path.join(dir, "kustomization.yaml");
  if (!fs.existsSync(file)) {
    problem(rel(dir), "kustomization", "", "kustomization.yaml is missing");
    return { sources: [], generated: [] };
  }
  const [k] = loadYamlFile(file);
  if (!k) return { sources: [], generated: [] };
  const o = k.object;
  for (const key of Object.keys(o)) {
    if (!KUSTOMIZE_FIELDS.has(key)) {
      problem(whereOf(k, [key]), "Kustomization", key, "unknown kustomization field");
    }
  }
  const sources = [];
  (o.resources ?? []).forEach((res, i) => {
    const p = path.join(dir, String(res));
    if (typeof res !== "string" || !fs.existsSync(p) || !fs.statSync(p).isFile()) {
      problem(whereOf(k, ["resources", i]), "Kustomization", `resources[${i}]`,
        `${res}: not a file in ${rel(dir)} (only plain files are read here)`);
      return;
    }
    sources.push(...loadYamlFile(p));
  });
  const generated = [];
  (o.configMapGenerator ?? []).forEach((g, gi) => {
    const data = {};
    (g.files ?? []).forEach((spec, fi) => {
      const [key, file] = String(spec).includes("=") ? String(spec).split("=", 2) : [path.basename(String(spec)), String(spec)];
      const p = path.join(dir, file);
      if (!fs.existsSync(p)) {
        problem(whereOf(k, ["configMapGenerator", gi, "files", fi]), "Kustomization",
          `configMapGenerator[${gi}].files[${fi}]`, `${file}: no such file`);
        return;
      }
      data[key] = fs.readFileSync(p, "utf8");
      generatedFiles[`${g.name}/${key}`] = p;
    });
    for (const lit of g.literals ?? []) {
      const [key, ...rest] = String(lit).split("=");
      data[key] = rest.join("=");
    }
    const object = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data };
    generated.push({ file: k.file, label: `${k.label} (configMapGenerator ${g.name})`, index: gi, object });
  });
  return { sources, generated };
}
const generatedFiles = {}; // "configmap/key" -> source file, for messages

// ---------------------------------------------------------------------------------------------
// 1a. JSON schema validation with kubernetes-models

// apiVersion group -> npm package with its models; the core groups are in kubernetes-models.
const CRD_PACKAGES = { "monitoring.coreos.com": "@kubernetes-models/prometheus-operator" };

function modelModule(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return undefined;
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/", 2) : ["", apiVersion];
  if (!/^[a-z0-9.]*$/.test(group) || !/^v[0-9a-z]+$/.test(version)) return undefined;
  if (CRD_PACKAGES[group]) return `${CRD_PACKAGES[group]}/${group}/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

async function loadModel(entry) {
  const { apiVersion, kind } = entry.object ?? {};
  // kubernetes-models keeps the schemas of old beta APIs (policy/v1beta1, autoscaling/v2beta2,
  // ...) that current clusters no longer serve: accept stable versions only.
  if (/\/v\d+(alpha|beta)\d*$|^v\d+(alpha|beta)\d*$/.test(String(apiVersion))) {
    problem(whereOf(entry, ["apiVersion"]), nameOf(entry.object), "apiVersion",
      `"${apiVersion}" is an alpha/beta API (policy/v1beta1 and autoscaling/v2beta2 are no longer served since Kubernetes 1.25/1.26): use the stable version`);
    return undefined;
  }
  const mod = modelModule(apiVersion, kind);
  if (mod) {
    try {
      const m = await import(mod);
      if (typeof m[kind] === "function") return { mod, Model: m[kind] };
    } catch {
      // fall through: no such model
    }
  }
  problem(whereOf(entry, ["kind"]), nameOf(entry.object), "",
    `no schema for apiVersion "${apiVersion}" kind "${kind}" in kubernetes-models` +
      (apiVersion && !String(apiVersion).includes(".") ? "" : " (CRD groups known: " + Object.keys(CRD_PACKAGES).join(", ") + ")"));
  return undefined;
}

function schemaCheck(entry, Model) {
  try {
    new Model(entry.object).validate();
  } catch (e) {
    const errors = Array.isArray(e.errors) && e.errors.length ? e.errors : [{ instancePath: "", message: e.message }];
    for (const err of errors) {
      const segs = (err.instancePath ?? "").split("/").filter(Boolean).map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, "/").replace(/~0/g, "~")));
      let msg = err.message;
      if (err.keyword === "required") msg = `missing required field "${err.params.missingProperty}"`;
      else if (err.keyword === "enum") msg = `${msg}: ${JSON.stringify(err.params.allowedValues)}`;
      else if (err.keyword === "type") msg = `wrong type: ${msg}`;
      problem(whereOf(entry, segs), nameOf(entry.object), fieldPath(segs), `${msg} [schema]`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 1b. TypeScript excess-property and type check

// Writes value as a TS literal, one property or element per line; lineMap[line] = path.
function tsLiteral(value, segs, out, lineMap, indent) {
  const pad = "  ".repeat(indent);
  if (value === null || value === undefined) return "undefined";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const parts = ["["];
    value.forEach((v, i) => {
      lineMap[out.line + parts.length] = [...segs, i];
      const lit = tsLiteral(v, [...segs, i], { line: out.line + parts.length }, lineMap, indent + 1);
      const lines = lit.split("\n");
      parts.push(`${pad}  ${lines[0]}`, ...lines.slice(1));
      parts[parts.length - 1] += ",";
    });
    parts.push(`${pad}]`);
    return parts.join("\n");
  }
  if (typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    const parts = ["{"];
    for (const key of keys) {
      lineMap[out.line + parts.length] = [...segs, key];
      const lit = tsLiteral(value[key], [...segs, key], { line: out.line + parts.length }, lineMap, indent + 1);
      const lines = lit.split("\n");
      parts.push(`${pad}  ${JSON.stringify(key)}: ${lines[0]}`, ...lines.slice(1));
      parts[parts.length - 1] += ",";
    }
    parts.push(`${pad}}`);
    return parts.join("\n");
  }
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(String(value));
}

function typeCheck(items) {
  if (!items.length) return;
  const tmp = fs.mkdtempSync(path.join(here, ".tsgen-"));
  try {
    const files = [];
    const byFile = new Map();
    items.forEach(({ entry, mod }, n) => {
      const kind = entry.object.kind;
      const header = [`import type { I${kind} } from ${JSON.stringify(mod)};`, ""];
      const lineMap = {};
      const first = header.length + 1; // 1-based line of "export const doc ... = {"
      const literal = tsLiteral(entry.object, [], { line: first }, lineMap, 0);
      const text = `${header.join("\n")}\nexport const doc: I${kind} = ${literal};\n`;
      const file = path.join(tmp, `doc${n}.ts`);
      fs.writeFileSync(file, text);
      files.push(file);
      byFile.set(path.resolve(file), { entry, lineMap, first });
    });
    const program = ts.createProgram(files, {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      target: ts.ScriptTarget.ES2020,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      types: [],
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const msg = ts.flattenDiagnosticMessageText(d.messageText, " ");
      const info = d.file && byFile.get(path.resolve(d.file.fileName));
      if (!info) {
        problem("typescript", "setup", "", msg);
        continue;
      }
      const line = d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1; // 1-based
      let segs = [];
      for (let l = line; l >= info.first; l--) {
        if (info.lineMap[l]) {
          segs = info.lineMap[l];
          break;
        }
      }
      let text = msg.replace(/\s+/g, " ");
      if (d.code === 2353 || d.code === 2561) {
        const m = /'"?([^"']+)"?' does not exist in type '([^']+)'/.exec(msg);
        const where = m && (m[2].startsWith("{") ? `the ${info.entry.object.kind} schema` : m[2].replace(/^I/, ""));
        text = m ? `unknown field "${m[1]}" (not in ${where})` : text;
      } else if (d.code === 2741 || d.code === 2739) {
        text = `missing required field: ${text}`;
      } else if (d.code === 2322) {
        text = `wrong type: ${text}`;
      } else if (d.code === 2307) {
        problem("typescript", "setup", "", `${msg} (is node_modules complete? run npm ci in tests/k8s)`);
        continue;
      }
      problem(whereOf(info.entry, segs), nameOf(info.entry.object), fieldPath(segs), `${text} [types TS${d.code}]`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function validateObjects(entries) {
  const typed = [];
  for (const entry of entries) {
    const o = entry.object;
    if (typeof o !== "object" || Array.isArray(o)) {
      problem(whereOf(entry), `document ${entry.index + 1}`, "", "not a mapping");
      continue;
    }
    const found = await loadModel(entry);
    if (!found) continue;
    schemaCheck(entry, found.Model);
    typed.push({ entry, mod: found.mod });
  }
  typeCheck(typed);
}

// ---------------------------------------------------------------------------------------------
// 3. Consistency between the objects and the egressd config

function parseDuration(v, fallback) {
  if (v === undefined || v === null) return fallback;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(String(v));
  if (!m) return NaN;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}
function hostPort(addr) {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(String(addr ?? ""));
  return m ? { host: m[1] ?? m[2], port: Number(m[3]) } : undefined;
}
const matches = (selector, labels) =>
  selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

function consistency(entries, effectiveConfig, sourceOf) {
  const objs = entries.map((e) => e.object);
  const of = (kind) => objs.filter((o) => o?.kind === kind);
  const where = (o) => sourceOf(o);
  const P = (o, field, msg) => problem(where(o), nameOf(o), field, msg);
  const required = ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "ServiceMonitor"];
  for (const kind of required) {
    if (!of(kind).length && !yamlBroken) problem(rel(dir), kind, "", `no ${kind} in the kustomization`);
  }
  const dep = of("Deployment").find((d) => d.metadata?.name === "egressd") ?? of("Deployment")[0];
  if (!dep) return;
  const pod = dep.spec?.template?.spec ?? {};
  const podLabels = dep.spec?.template?.metadata?.labels ?? {};
  const c = (pod.containers ?? []).find((x) => x.name === "egressd") ?? pod.containers?.[0];
  if (!c) return P(dep, "spec.template.spec.containers", "no egressd container");
  const cpath = `spec.template.spec.containers[${pod.containers.indexOf(c)}]`;

  // Security: non-root, read-only root filesystem, no privilege escalation, no capabilities.
  const psc = pod.securityContext ?? {};
  const sc = c.securityContext ?? {};
  if (!(sc.runAsNonRoot ?? psc.runAsNonRoot)) P(dep, `${cpath}.securityContext.runAsNonRoot`, "must be true (egressd runs as uid 10001)");
  const uid = sc.runAsUser ?? psc.runAsUser;
  if (uid === 0) P(dep, `${cpath}.securityContext.runAsUser`, "must not be 0");
  if (sc.readOnlyRootFilesystem !== true) P(dep, `${cpath}.securityContext.readOnlyRootFilesystem`, "must be true (egressd writes nothing)");
  if (sc.allowPrivilegeEscalation !== false) P(dep, `${cpath}.securityContext.allowPrivilegeEscalation`, "must be false");
  if (!(sc.capabilities?.drop ?? []).includes("ALL")) P(dep, `${cpath}.securityContext.capabilities.drop`, 'must include "ALL"');
  if (sc.privileged === true) P(dep, `${cpath}.securityContext.privileged`, "must not be true");
  if (pod.enableServiceLinks !== false) {
    P(dep, "spec.template.spec.enableServiceLinks", "must be false: service links inject EGRESSD_SERVICE_HOST, EGRESSD_PORT, ... for a Service named egressd, and egressd refuses to start on unknown EGRESSD_* variables");
  }

  // The config the pod reads.
  const cfg = effectiveConfig ?? {};
  const listeners = cfg.listeners ?? [{ address: "0.0.0.0:3128", proxy_protocol: "off", trusted_proxies: [] }];
  const admin = hostPort(cfg.admin?.address ?? "127.0.0.1:9090");
  const loopback = (h) => /^127\./.test(h) || h === "::1" || h === "localhost";
  listeners.forEach((l, i) => {
    const hp = hostPort(l.address);
    if (!hp) return problem("egressd config", "ConfigMap", `listeners[${i}].address`, `cannot read "${l.address}"`);
    if (loopback(hp.host)) problem("egressd config", "ConfigMap", `listeners[${i}].address`, `${l.address} is loopback: the NLB cannot reach it (use 0.0.0.0)`);
    const mode = String(l.proxy_protocol ?? "off");
    if (!["required", "optional"].includes(mode)) problem("egressd config", "ConfigMap", `listeners[${i}].proxy_protocol`, `"${mode}": the NLB sends PROXY v2, use "required" (or "optional")`);
    if (!(l.trusted_proxies ?? []).length) problem("egressd config", "ConfigMap", `listeners[${i}].trusted_proxies`, "empty: list the VPC CIDR (the NLB's addresses)");
  });
  if (!admin) problem("egressd config", "ConfigMap", "admin.address", "cannot read it");
  else if (loopback(admin.host)) problem("egressd config", "ConfigMap", "admin.address", `${cfg.admin?.address ?? "127.0.0.1:9090 (default)"} is loopback: kubelet probes, the NLB health check and Prometheus cannot reach it (use 0.0.0.0:9090)`);

  // Ports: named container ports resolve, and match the config.
  const cports = c.ports ?? [];
  const resolvePort = (p) => (typeof p === "number" ? p : cports.find((x) => x.name === p)?.containerPort);
  const proxyPort = hostPort(listeners[0]?.address)?.port;
  if (proxyPort !== undefined && !cports.some((p) => p.containerPort === proxyPort)) P(dep, `${cpath}.ports`, `no containerPort ${proxyPort} (the listener in the config)`);
  if (admin && !cports.some((p) => p.containerPort === admin.port)) P(dep, `${cpath}.ports`, `no containerPort ${admin.port} (admin.address in the config)`);

  // Probes.
  for (const [probe, wantPath] of [["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]]) {
    const h = c[probe]?.httpGet;
    if (!h) {
      P(dep, `${cpath}.${probe}`, `must be an httpGet probe on ${wantPath}`);
      continue;
    }
    if (h.path !== wantPath) P(dep, `${cpath}.${probe}.httpGet.path`, `"${h.path}", expected "${wantPath}"`);
    const port = resolvePort(h.port);
    if (port === undefined) P(dep, `${cpath}.${probe}.httpGet.port`, `"${h.port}" is not a port of the container`);
    else if (admin && port !== admin.port) P(dep, `${cpath}.${probe}.httpGet.port`, `${port} is not the admin port ${admin.port}`);
  }

  // The config reaches the pod: ConfigMap volume mounted where EGRESSD_CONFIG points.
  const cms = of("ConfigMap");
  const configPath = (c.env ?? []).find((e) => e.name === "EGRESSD_CONFIG")?.value ?? "/etc/egressd/egressd.yaml";
  let mountedCm;
  for (const m of c.volumeMounts ?? []) {
    const v = (pod.volumes ?? []).find((x) => x.name === m.name);
    if (!v?.configMap) continue;
    const cm = cms.find((x) => x.metadata?.name === v.configMap.name);
    if (!cm) {
      P(dep, "spec.template.spec.volumes", `ConfigMap "${v.configMap.name}" is not in the kustomization`);
      continue;
    }
    const rel2 = path.posix.relative(m.mountPath, configPath);
    const key = m.subPath ? (m.mountPath === configPath ? m.subPath : undefined) : rel2 && !rel2.startsWith("..") ? rel2 : undefined;
    const item = (v.configMap.items ?? []).find((it) => it.path === key);
    const dataKey = item ? item.key : key;
    if (dataKey !== undefined && cm.data?.[dataKey] !== undefined) mountedCm = { cm, key: dataKey };
    if (m.readOnly !== true) P(dep, `${cpath}.volumeMounts`, `${m.mountPath} should be readOnly: true`);
  }
  if (!mountedCm) P(dep, `${cpath}.volumeMounts`, `no ConfigMap key is mounted at ${configPath} (EGRESSD_CONFIG)`);

  // Drain: grace period covers preStop + drain.delay + drain.timeout with a margin.
  const delay = parseDuration(cfg.drain?.delay, 5);
  const timeout = parseDuration(cfg.drain?.timeout, 90);
  const pre = c.lifecycle?.preStop;
  let preStop = 0;
  if (pre?.sleep) preStop = Number(pre.sleep.seconds) || 0;
  else if (pre?.exec) {
    const m = /\bsleep\s+(\d+)/.exec((pre.exec.command ?? []).join(" "));
    preStop = m ? Number(m[1]) : 0;
  }
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  const MARGIN = 5;
  if (Number.isNaN(delay) || Number.isNaN(timeout)) {
    problem("egressd config", "ConfigMap", "drain", "cannot read drain.delay / drain.timeout");
  } else if (grace < preStop + delay + timeout + MARGIN) {
    P(dep, "spec.template.spec.terminationGracePeriodSeconds",
      `${grace}s is too short: preStop ${preStop}s + drain.delay ${delay}s + drain.timeout ${timeout}s + ${MARGIN}s margin = ${preStop + delay + timeout + MARGIN}s (the kubelet would kill egressd mid-drain)`);
  }

  // Services.
  const lbs = of("Service").filter((s) => s.spec?.type === "LoadBalancer");
  if (!lbs.length) problem(rel(dir), "Service", "", "no Service of type LoadBalancer");
  for (const s of lbs) {
    const a = s.metadata?.annotations ?? {};
    const want = {
      "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
      "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
      "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path": "/readyz",
      "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port": admin ? String(admin.port) : undefined,
    };
    for (const [k, v] of Object.entries(want)) {
      if (v !== undefined && a[k] !== v) P(s, `metadata.annotations["${k}"]`, `${a[k] === undefined ? "missing" : `"${a[k]}"`}, expected "${v}"`);
    }
    if (a["service.beta.kubernetes.io/aws-load-balancer-type"] !== "external" && s.spec?.loadBalancerClass !== "service.k8s.aws/nlb") {
      P(s, "spec.loadBalancerClass", 'hand the Service to the AWS Load Balancer Controller: loadBalancerClass service.k8s.aws/nlb or annotation aws-load-balancer-type: external');
    }
    const tga = String(a["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"] ?? "");
    const attr = Object.fromEntries(tga.split(",").filter(Boolean).map((kv) => kv.trim().split("=", 2)));
    if (attr["preserve_client_ip.enabled"] !== "false") {
      P(s, 'metadata.annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]', "must set preserve_client_ip.enabled=false: egressd trusts PROXY headers only from the NLB's VPC addresses");
    }
    const dereg = attr["deregistration_delay.timeout_seconds"];
    if (dereg !== undefined && !Number.isNaN(delay + timeout)) {
      if (Number(dereg) < delay + timeout) P(s, "deregistration_delay.timeout_seconds", `${dereg}s < drain.delay + drain.timeout (${delay + timeout}s): the NLB would cut tunnels egressd still serves`);
      if (Number(dereg) > grace) P(s, "deregistration_delay.timeout_seconds", `${dereg}s > terminationGracePeriodSeconds (${grace}s)`);
    }
    if (!matches(s.spec?.selector, podLabels)) P(s, "spec.selector", "does not select the egressd pods");
    for (const [i, p] of (s.spec?.ports ?? []).entries()) {
      const target = resolvePort(p.targetPort ?? p.port);
      if (target === undefined) P(s, `spec.ports[${i}].targetPort`, `"${p.targetPort}" is not a port of the container`);
      else if (admin && target === admin.port) P(s, `spec.ports[${i}]`, "exposes the admin port through the load balancer");
      else if (target !== proxyPort) P(s, `spec.ports[${i}].targetPort`, `${target} is not the proxy listener port ${proxyPort}`);
    }
    const gate = (cfg.gates?.sources ?? []).map(String);
    for (const [i, r] of (s.spec?.loadBalancerSourceRanges ?? []).entries()) {
      if (!gate.includes(r)) P(s, `spec.loadBalancerSourceRanges[${i}]`, `${r} is not in gates.sources of the egressd config: it would pass the NLB and get 403`);
    }
  }

  // HPA, PDB, ServiceMonitor point at the right things.
  for (const h of of("HorizontalPodAutoscaler")) {
    const t = h.spec?.scaleTargetRef ?? {};
    if (t.kind !== "Deployment" || t.name !== dep.metadata?.name) P(h, "spec.scaleTargetRef", `does not name Deployment ${dep.metadata?.name}`);
    if ((h.spec?.minReplicas ?? 1) < 2) P(h, "spec.minReplicas", "at least 2, so a drain or a PDB eviction never leaves no pod");
    if (dep.spec?.replicas !== undefined) P(dep, "spec.replicas", "leave it out: the HPA owns the replica count");
  }
  for (const b of of("PodDisruptionBudget")) {
    if (!matches(b.spec?.selector?.matchLabels, podLabels)) P(b, "spec.selector", "does not select the egressd pods");
  }
  for (const m of of("ServiceMonitor")) {
    const svc = of("Service").filter((s) => matches(m.spec?.selector?.matchLabels, s.metadata?.labels));
    if (!svc.length) P(m, "spec.selector", "selects no Service of the kustomization");
    for (const s of svc) {
      if (s.spec?.type === "LoadBalancer") P(m, "spec.selector", `selects the load balancer Service ${s.metadata.name}`);
      for (const [i, e] of (m.spec?.endpoints ?? []).entries()) {
        const sp = (s.spec?.ports ?? []).find((p) => p.name === e.port);
        if (!sp) P(m, `spec.endpoints[${i}].port`, `Service ${s.metadata.name} has no port named "${e.port}"`);
        else if (admin && resolvePort(sp.targetPort ?? sp.port) !== admin.port) P(s, "spec.ports", `port "${e.port}" does not lead to the admin port ${admin.port}`);
        if ((e.path ?? "/metrics") !== "/metrics") P(m, `spec.endpoints[${i}].path`, 'egressd serves metrics on "/metrics"');
      }
    }
  }
  return mountedCm;
}

// ---------------------------------------------------------------------------------------------
// 4. egressd --check-config on the ConfigMap's config, with the container's EGRESSD_* variables

function containerEnv(entries) {
  const dep = entries.map((e) => e.object).find((o) => o?.kind === "Deployment");
  const c = dep?.spec?.template?.spec?.containers?.find((x) => x.name === "egressd");
  const env = {};
  for (const e of c?.env ?? []) if (e.name?.startsWith("EGRESSD_") && e.value !== undefined) env[e.name] = String(e.value);
  return env;
}

function checkConfig(text, label, podEnv) {
  const bin = process.env.EGRESSD_BIN;
  if (!bin) return undefined;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "egressd-k8s-"));
  try {
    const file = path.join(tmp, "egressd.yaml");
    fs.writeFileSync(file, text);
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("EGRESSD_")));
    for (const [k, v] of Object.entries(podEnv)) if (k !== "EGRESSD_CONFIG") env[k] = v;
    const r = spawnSync(bin, ["--check-config", "--config", file], { env, encoding: "utf8" });
    if (r.error) {
      problem("EGRESSD_BIN", bin, "", `cannot run: ${r.error.message}`);
      return undefined;
    }
    if (r.status !== 0) {
      const out = `${r.stderr}${r.stdout}`.split(file).join(label).trim();
      problem(label, "egressd --check-config", "", `exit ${r.status}\n    ${out.replace(/\n/g, "\n    ")}`);
      return undefined;
    }
    console.log(`ok   egressd --check-config ${label}${Object.keys(podEnv).length ? ` (env: ${Object.keys(podEnv).join(", ")})` : ""}`);
    return YAML.parse(r.stdout);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// The config as the pod would see it without the binary: the file, with the variables that the
// consistency checks look at applied.
function overlayEnv(cfg, env) {
  const c = structuredClone(cfg ?? {});
  const list = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
  if (env.EGRESSD_LISTEN) c.listeners = list(env.EGRESSD_LISTEN).map((address) => ({ address, proxy_protocol: "off", trusted_proxies: [] }));
  if (env.EGRESSD_PROXY_PROTOCOL) for (const l of c.listeners ?? []) l.proxy_protocol = env.EGRESSD_PROXY_PROTOCOL;
  if (env.EGRESSD_TRUSTED_PROXIES) for (const l of c.listeners ?? []) l.trusted_proxies = list(env.EGRESSD_TRUSTED_PROXIES);
  if (env.EGRESSD_ADMIN_LISTEN) c.admin = { ...(c.admin ?? {}), address: env.EGRESSD_ADMIN_LISTEN };
  if (env.EGRESSD_ALLOW_SOURCES) c.gates = { ...(c.gates ?? {}), sources: list(env.EGRESSD_ALLOW_SOURCES) };
  return c;
}

// ---------------------------------------------------------------------------------------------

const started = Date.now();
const { sources, generated } = loadKustomization();
const sourceEntries = [...sources, ...generated];
await validateObjects(sourceEntries);
console.log(`${problems.length ? "FAIL" : "ok  "} schema (kubernetes-models .validate()) and TypeScript excess-property check: ${sourceEntries.length} objects from ${rel(dir)}`);

// Which source file an object (source or rendered) comes from, for messages.
const origin = new Map(sourceEntries.map((e) => [`${e.object?.kind}/${e.object?.metadata?.name}`, e.label]));
const sourceOf = (o) => {
  const name = String(o?.metadata?.name ?? "");
  for (const [k, label] of origin) {
    const [kind, n] = k.split("/");
    if (kind === o?.kind && (n === name || (kind === "ConfigMap" && name.startsWith(`${n}-`)))) return label;
  }
  return "rendered";
};

let finalEntries = sourceEntries;
if (renderedFile) {
  const before = problems.length;
  const rendered = loadYamlFile(renderedFile, "kubectl kustomize output");
  if (before === problems.length && before === 0) {
    await validateObjects(rendered);
    console.log(`${problems.length > before ? "FAIL" : "ok  "} schema and TypeScript check of the kubectl kustomize output: ${rendered.length} objects`);
  } else if (before) {
    console.log("skip schema check of the kubectl kustomize output (the sources have problems)");
  }
  finalEntries = rendered;
}

const podEnv = containerEnv(finalEntries);
const cmEntry = finalEntries.find((e) => e.object?.kind === "ConfigMap" && e.object?.data?.["egressd.yaml"] !== undefined);
let cfgText = cmEntry?.object.data["egressd.yaml"];
const cfgLabel = generatedFiles[`egressd-config/egressd.yaml`] ? rel(generatedFiles[`egressd-config/egressd.yaml`]) : "ConfigMap egressd.yaml";
let effective;
if (cfgText !== undefined) {
  effective = checkConfig(cfgText, cfgLabel, podEnv);
  if (effective === undefined && !process.env.EGRESSD_BIN) {
    console.log("skip egressd --check-config (set EGRESSD_BIN to the egressd binary)");
  }
  if (effective === undefined) {
    try {
      effective = overlayEnv(YAML.parse(cfgText), podEnv);
    } catch (e) {
      problem(cfgLabel, "ConfigMap", "egressd.yaml", `not YAML: ${e.message.split("\n")[0]}`);
    }
  }
}
const before = problems.length;
consistency(finalEntries, effective, sourceOf);
console.log(`${problems.length > before ? "FAIL" : "ok  "} consistency: security context, probes, ports, selectors, NLB annotations, drain timing`);

if (problems.length) {
  console.log(`\n${problems.length} problem${problems.length > 1 ? "s" : ""}:`);
  for (const p of problems) console.log(`  ${p}`);
}
console.log(`validate.mjs: ${problems.length ? "FAILED" : "passed"} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(problems.length ? 1 : 0);
