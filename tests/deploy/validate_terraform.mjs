#!/usr/bin/env node
// Offline schema and reference check of the Terraform under deploy/terraform.
//
// `terraform validate` needs the AWS provider binary from the registry, which CI cannot reach.
// This check stands in for it: every .tf file is parsed with @cdktf/hcl2json (HashiCorp's HCL
// parser compiled to WebAssembly), and every aws_* resource, data source and provider block is
// checked against the AWS provider schema that @cdktn/provider-aws generated from the provider
// (see lib/schema.mjs):
//   - the resource or data source type exists;
//   - every argument and nested block exists at its level, blocks are written as blocks, blocks
//     of at most one are not repeated, literal values have a plausible type;
//   - every required argument and required nested block is present (directly or as dynamic);
//   - lifecycle.ignore_changes names real arguments;
//   - every reference resolves: var.*, local.*, module.*.<output>, data.aws_*.*.<attribute>,
//     aws_*.*.<attribute> (with an instance key exactly when the target has count or for_each),
//     count.index only with count, each.* only with for_each;
//   - module calls pass only declared variables and every variable without a default;
//   - variables and outputs carry a description (and variables a type);
//   - required_providers admits the provider version the schema comes from.
//
// Usage: node validate_terraform.mjs [TERRAFORM_ROOT]   (default: ../../deploy/terraform)
// Exit status: 0 clean, 1 problems found, 2 usage or setup error.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ProviderSchema, closest } from "./lib/schema.mjs";
import { listConfigDirs, loadConfig, argLine, strings, references, isExpr } from "./lib/hcl.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const root = path.resolve(process.argv[2] || path.join(repo, "deploy/terraform"));
const pkgDir = path.join(here, "node_modules/@cdktn/provider-aws");

if (!fs.existsSync(path.join(pkgDir, "package.json"))) {
  console.error(`validate_terraform: ${pkgDir} is missing; run npm ci in ${here}`);
  process.exit(2);
}
if (!fs.existsSync(root)) {
  console.error(`validate_terraform: no such directory ${root}`);
  process.exit(2);
}

const schema = new ProviderSchema(pkgDir);
const problems = [];
const rel = (p) => path.relative(repo, p) || ".";

const RESOURCE_META = new Set(["count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"]);
const DATA_META = new Set(["count", "for_each", "depends_on", "provider", "lifecycle"]);
const LIFECYCLE_KEYS = new Set(["create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by", "precondition", "postcondition"]);
const MODULE_META = new Set(["source", "version", "count", "for_each", "providers", "depends_on"]);
const VARIABLE_KEYS = new Set(["description", "type", "default", "validation", "sensitive", "nullable", "ephemeral"]);
const OUTPUT_KEYS = new Set(["description", "value", "sensitive", "depends_on", "precondition", "ephemeral"]);

const configs = new Map();
async function config(dir) {
  if (!configs.has(dir)) configs.set(dir, await loadConfig(dir));
  return configs.get(dir);
}

function report(cfg, line, subject, msg, file) {
  const where = `${rel(path.join(cfg.dir, file))}:${line || 1}`;
  problems.push(`${where}: ${subject ? subject + ": " : ""}${msg}`);
}

function describe(value) {
  if (Array.isArray(value)) return "a list";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

function checkLiteralType(member, value) {
  if (isExpr(value) || value === null) return null;
  switch (member.kind) {
    case "string":
      return Array.isArray(value) || typeof value === "object" ? `expects a string, got ${describe(value)}` : null;
    case "number":
      if (typeof value === "number") return null;
      if (typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value)) return null;
      return `expects a number, got ${typeof value === "string" ? `"${value}"` : describe(value)}`;
    case "bool":
      if (typeof value === "boolean" || value === "true" || value === "false") return null;
      return `expects true or false, got ${typeof value === "string" ? `"${value}"` : describe(value)}`;
    case "list":
      return Array.isArray(value) ? null : `expects a list, got ${describe(value)}`;
    case "map":
      return value && typeof value === "object" && !Array.isArray(value) ? null : `expects a map, got ${describe(value)}`;
    default:
      return null;
  }
}

// Checks a block body against the members of its schema interface.
function checkBody(ctx, sc, members, body, where, top) {
  const present = new Set();
  for (const [key, value] of Object.entries(body)) {
    if (top && ctx.meta.has(key)) {
      if (key === "lifecycle") checkLifecycle(ctx, members, value, where);
      if (key === "provisioner" || key === "connection")
        report(ctx.cfg, argLine(ctx.cfg, ctx.block, key), where, `"${key}" is not allowed here: keep the deployment declarative`, ctx.block.file);
      continue;
    }
    if (key === "dynamic") {
      for (const [name, dyns] of Object.entries(value)) {
        const member = members.get(name);
        if (!member || !member.isBlock) {
          const hint = closest(name, [...members.values()].filter((m) => m.isBlock).map((m) => m.name));
          report(ctx.cfg, argLine(ctx.cfg, ctx.block, name), where, `dynamic "${name}": no such nested block${hint ? ` (did you mean "${hint}"?)` : ""}`, ctx.block.file);
          continue;
        }
        present.add(name);
        for (const dyn of dyns) {
          for (const k of Object.keys(dyn))
            if (!["for_each", "iterator", "labels", "content"].includes(k))
              report(ctx.cfg, argLine(ctx.cfg, ctx.block, name), where, `dynamic "${name}": unknown argument "${k}"`, ctx.block.file);
          if (!("for_each" in dyn)) report(ctx.cfg, argLine(ctx.cfg, ctx.block, name), where, `dynamic "${name}": missing for_each`, ctx.block.file);
          const content = dyn.content;
          if (!Array.isArray(content) || content.length !== 1) {
            report(ctx.cfg, argLine(ctx.cfg, ctx.block, name), where, `dynamic "${name}": needs exactly one content block`, ctx.block.file);
            continue;
          }
          checkBody(ctx, sc, sc.interfaces.get(member.blockType), content[0], `${where}.${name}`, false);
        }
      }
      continue;
    }
    const member = members.get(key);
    const line = argLine(ctx.cfg, ctx.block, key);
    if (!member) {
      const hint = closest(key, [...members.keys()]);
      const kind = Array.isArray(value) && value.length && value.every((v) => v && typeof v === "object" && !Array.isArray(v)) ? "block" : "argument";
      const owner = top ? ctx.typeDesc : `the ${where.split(".").pop()} block of ${ctx.typeDesc}`;
      report(ctx.cfg, line, where, `unknown ${kind} "${key}"${hint ? ` (did you mean "${hint}"?)` : ""}; ${owner} has no such ${kind}`, ctx.block.file);
      continue;
    }
    present.add(key);
    if (member.isBlock) {
      const items = Array.isArray(value) ? value : null;
      if (!items || !items.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
        report(ctx.cfg, line, where, `"${key}" is a nested block: write ${key} { ... }, not ${key} = ...`, ctx.block.file);
        continue;
      }
      if (member.maxOne && items.length > 1) report(ctx.cfg, line, where, `"${key}" may appear at most once, found ${items.length}`, ctx.block.file);
      const nested = sc.interfaces.get(member.blockType);
      if (!nested) {
        report(ctx.cfg, line, where, `internal: no schema for block type ${member.blockType}`, ctx.block.file);
        continue;
      }
      for (const item of items) checkBody(ctx, sc, nested, item, `${where}.${key}`, false);
    } else {
      if (Array.isArray(value) && value.length && value.every((v) => v && typeof v === "object" && !Array.isArray(v)) && !["list", "any"].includes(member.kind)) {
        report(ctx.cfg, line, where, `"${key}" is an argument, not a block: write ${key} = ...`, ctx.block.file);
        continue;
      }
      const bad = checkLiteralType(member, value);
      if (bad) report(ctx.cfg, line, where, `"${key}" ${bad}`, ctx.block.file);
    }
  }
  for (const m of members.values())
    if (m.required && !present.has(m.name))
      report(ctx.cfg, ctx.block.line, where, `missing required ${m.isBlock ? "block" : "argument"} "${m.name}"`, ctx.block.file);
}

function checkLifecycle(ctx, members, value, where) {
  for (const lc of Array.isArray(value) ? value : [value]) {
    for (const [k, v] of Object.entries(lc)) {
      if (!LIFECYCLE_KEYS.has(k)) {
        report(ctx.cfg, argLine(ctx.cfg, ctx.block, k), where, `lifecycle: unknown argument "${k}"`, ctx.block.file);
        continue;
      }
      if (k === "ignore_changes" && Array.isArray(v)) {
        for (const item of v) {
          const name = String(item).replace(/^\$\{|\}$/g, "").split(/[.[]/)[0];
          if (name && name !== "all" && !members.has(name))
            report(ctx.cfg, argLine(ctx.cfg, ctx.block, "ignore_changes"), where, `lifecycle.ignore_changes: "${name}" is not an argument of ${ctx.typeDesc}`, ctx.block.file);
        }
      }
      if ((k === "precondition" || k === "postcondition") && Array.isArray(v))
        for (const c of v)
          for (const need of ["condition", "error_message"])
            if (!(need in c)) report(ctx.cfg, argLine(ctx.cfg, ctx.block, k), where, `lifecycle.${k}: missing "${need}"`, ctx.block.file);
    }
  }
}

// ---- references ---------------------------------------------------------------------------------

function firstAttr(parts, from) {
  let i = from;
  while (i < parts.length && !parts[i].name) i++;
  return { attr: i < parts.length ? parts[i].name : null, indexed: from < parts.length && !parts[from].name, splat: from < parts.length && parts[from].splat };
}

async function checkReferences(cfg, block, value, subject, scope) {
  for (const [s, p] of strings(value)) {
    if (p.includes("ignore_changes")) continue;
    for (const ref of references(s)) await checkRef(cfg, block, ref, subject, scope, p);
  }
}

async function checkRef(cfg, block, ref, subject, scope, p) {
  const line = block.line;
  const bad = (msg) => report(cfg, line, subject, `${msg} (in ${ref.text})`, block.file);
  const [a, b, c] = ref.parts;
  switch (ref.root) {
    case "var":
      if (!a?.name || !cfg.sym.variable.has(a.name)) bad(`reference to undeclared variable "var.${a?.name ?? a?.index}"`);
      return;
    case "local":
      if (!a?.name || !cfg.sym.local.has(a.name)) bad(`reference to undeclared local value "local.${a?.name ?? a?.index}"`);
      return;
    case "each":
      if (!scope.forEach) bad(`"each" is only available in a block with for_each`);
      else if (!a?.name || !["key", "value"].includes(a.name)) bad(`"each" has only .key and .value`);
      return;
    case "count":
      if (!scope.count) bad(`"count.index" is only available in a block with count`);
      else if (a?.name !== "index") bad(`"count" has only .index`);
      return;
    case "self":
      if (!p.includes("postcondition") && !p.includes("provisioner") && !p.includes("connection")) bad(`"self" is only available in postconditions, provisioners and connections`);
      return;
    case "path":
      if (!["module", "root", "cwd"].includes(a?.name)) bad(`unknown path attribute`);
      return;
    case "terraform":
      if (a?.name !== "workspace") bad(`unknown terraform attribute`);
      return;
    case "module": {
      const mod = a?.name && cfg.sym.module.get(a.name);
      if (!mod) return bad(`reference to undeclared module "module.${a?.name}"`);
      const { attr } = firstAttr(ref.parts, 1);
      const target = await moduleConfig(cfg, mod);
      if (attr && target && !target.sym.output.has(attr)) bad(`module "${a.name}" has no output "${attr}"`);
      return;
    }
    case "data": {
      if (!a?.name || !b?.name) return bad("incomplete data source reference");
      const key = `${a.name}.${b.name}`;
      const target = cfg.sym.data.get(key);
      if (!target) return bad(`reference to undeclared data source "data.${key}"`);
      return checkAttrRef(cfg, block, ref, subject, target, "data", a.name, 1, bad);
    }
    default: {
      if (!a?.name) return;
      const key = `${ref.root}.${a.name}`;
      const target = cfg.sym.resource.get(key);
      if (!target) {
        const hint = closest(key, [...cfg.sym.resource.keys()]);
        return bad(`reference to undeclared resource "${key}"${hint ? ` (did you mean "${hint}"?)` : ""}`);
      }
      return checkAttrRef(cfg, block, ref, subject, target, "resource", ref.root, 0, bad);
    }
  }
}

function checkAttrRef(cfg, block, ref, subject, target, kind, type, nameAt, bad) {
  const multi = "count" in target.body || "for_each" in target.body;
  const after = ref.parts.slice(nameAt + 1);
  const next = after[0];
  if (next && next.name && multi) return bad(`${kind === "data" ? "data." : ""}${type}.${target.name} has ${"count" in target.body ? "count" : "for_each"}: pick an instance ([count.index], [each.key]) or all of them ([*])`);
  if (next && next.index !== undefined && !next.splat && !multi) return bad(`${kind === "data" ? "data." : ""}${type}.${target.name} has no count or for_each and cannot be indexed`);
  const { attr } = firstAttr(after, 0);
  if (!attr) return;
  const sc = schema.load(kind, type);
  if (sc && !sc.attributes.has(attr)) {
    const hint = closest(attr, [...sc.attributes]);
    bad(`${type} has no attribute "${attr}"${hint ? ` (did you mean "${hint}"?)` : ""}`);
  }
}

async function moduleConfig(cfg, mod) {
  const src = mod.body.source;
  if (typeof src !== "string" || !/^\.\.?\//.test(src)) return null;
  const dir = path.resolve(cfg.dir, src);
  if (!fs.existsSync(dir)) return null;
  const target = await config(dir);
  if (!target.sym) buildSymbols(target);
  return target;
}

// ---- per directory ------------------------------------------------------------------------------

function buildSymbols(cfg) {
  cfg.sym = { resource: new Map(), data: new Map(), variable: new Map(), output: new Map(), local: new Map(), module: new Map() };
  for (const b of cfg.blocks) {
    const table = cfg.sym[b.kind];
    if (!table) continue;
    const key = b.kind === "resource" || b.kind === "data" ? `${b.type}.${b.name}` : b.name;
    if (table.has(key)) report(cfg, b.line, `${b.kind} ${key}`, `declared twice (also at ${table.get(key).file}:${table.get(key).line})`, b.file);
    else table.set(key, b);
  }
}

function checkVersionConstraint(cfg, block, constraint) {
  const have = schema.providerVersion;
  if (!have || typeof constraint !== "string") return;
  const v = (s) => s.split(".").map((x) => Number(x) || 0);
  const cmp = (x, y) => {
    for (let i = 0; i < 3; i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0);
    return 0;
  };
  const hv = v(have);
  for (const part of constraint.split(",").map((s) => s.trim())) {
    const m = /^(>=|<=|~>|!=|>|<|=)?\s*v?([\d.]+)$/.exec(part);
    if (!m) {
      report(cfg, block.line, "terraform.required_providers.aws", `cannot read version constraint "${part}"`, block.file);
      continue;
    }
    const op = m[1] || "=";
    const w = v(m[2]);
    const c = cmp(hv, w);
    let ok;
    if (op === "~>") {
      const n = m[2].split(".").length;
      const upper = n <= 1 ? [w[0] + 1] : n === 2 ? [w[0] + 1, 0, 0] : [w[0], w[1] + 1, 0];
      ok = c >= 0 && cmp(hv, upper) < 0;
    } else ok = { ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0, "=": c === 0, "!=": c !== 0 }[op];
    if (!ok)
      report(cfg, block.line, "terraform.required_providers.aws", `"${constraint}" excludes ${have}, the provider version these checks use (@cdktn/provider-aws ${schema.packageVersion})`, block.file);
  }
}

async function validateDir(dir) {
  const cfg = await config(dir);
  for (const e of cfg.errors) report(cfg, e.line, "", e.msg, e.file);
  if (!cfg.sym) buildSymbols(cfg);
  let checked = 0;

  for (const block of cfg.blocks) {
    const isObj = block.kind !== "local" && block.body && typeof block.body === "object";
    const scope = { count: isObj && "count" in block.body, forEach: isObj && "for_each" in block.body };
    switch (block.kind) {
      case "resource":
      case "data": {
        const subject = `${block.kind === "data" ? "data." : ""}${block.type}.${block.name}`;
        if (!block.type.startsWith("aws_")) {
          report(cfg, block.line, subject, `only plain aws_* ${block.kind === "data" ? "data sources" : "resources"} are allowed (nothing else can be checked offline)`, block.file);
          break;
        }
        const sc = schema.load(block.kind, block.type);
        if (!sc) {
          const hint = closest(block.type, schema.typeNames(block.kind));
          report(cfg, block.line, subject, `unknown ${block.kind === "data" ? "data source" : "resource"} type "${block.type}" in the AWS provider ${schema.providerVersion}${hint ? ` (did you mean "${hint}"?)` : ""}`, block.file);
          break;
        }
        if (scope.count && scope.forEach) report(cfg, block.line, subject, "count and for_each cannot be used together", block.file);
        const ctx = { cfg, block, meta: block.kind === "data" ? DATA_META : RESOURCE_META, typeDesc: block.type };
        checkBody(ctx, sc, sc.root, block.body, subject, true);
        await checkReferences(cfg, block, block.body, subject, scope);
        checked++;
        break;
      }
      case "provider": {
        const subject = `provider "${block.type}"`;
        if (block.type !== "aws") {
          report(cfg, block.line, subject, "only the aws provider is used", block.file);
          break;
        }
        const sc = schema.load("provider", "aws");
        const body = { ...block.body };
        delete body.alias;
        checkBody({ cfg, block, meta: new Set(), typeDesc: "the aws provider" }, sc, sc.root, body, subject, true);
        await checkReferences(cfg, block, block.body, subject, scope);
        checked++;
        break;
      }
      case "terraform": {
        for (const rp of block.body.required_providers || [])
          for (const [name, req] of Object.entries(rp)) {
            if (name !== "aws") report(cfg, block.line, "terraform.required_providers", `unexpected provider "${name}"`, block.file);
            else {
              if (req.source !== "hashicorp/aws") report(cfg, block.line, "terraform.required_providers.aws", `source must be hashicorp/aws, got ${JSON.stringify(req.source)}`, block.file);
              if (!req.version) report(cfg, block.line, "terraform.required_providers.aws", "no version constraint", block.file);
              else checkVersionConstraint(cfg, block, req.version);
            }
          }
        break;
      }
      case "variable": {
        const subject = `variable "${block.name}"`;
        for (const k of Object.keys(block.body)) if (!VARIABLE_KEYS.has(k)) report(cfg, block.line, subject, `unknown argument "${k}"`, block.file);
        if (!block.body.description) report(cfg, block.line, subject, "no description (the README's variable table is built from it)", block.file);
        if (!block.body.type) report(cfg, block.line, subject, "no type", block.file);
        for (const val of block.body.validation || []) {
          for (const need of ["condition", "error_message"]) if (!(need in val)) report(cfg, block.line, subject, `validation without ${need}`, block.file);
          await checkReferences(cfg, block, val, subject, scope);
        }
        break;
      }
      case "output": {
        const subject = `output "${block.name}"`;
        for (const k of Object.keys(block.body)) if (!OUTPUT_KEYS.has(k)) report(cfg, block.line, subject, `unknown argument "${k}"`, block.file);
        if (!("value" in block.body)) report(cfg, block.line, subject, "missing value", block.file);
        if (!block.body.description) report(cfg, block.line, subject, "no description", block.file);
        await checkReferences(cfg, block, block.body, subject, scope);
        break;
      }
      case "local":
        await checkReferences(cfg, block, block.body, `local.${block.name}`, scope);
        break;
      case "module": {
        const subject = `module "${block.name}"`;
        await checkReferences(cfg, block, block.body, subject, scope);
        const target = await moduleConfig(cfg, block);
        if (!target) {
          report(cfg, block.line, subject, `source ${JSON.stringify(block.body.source)} is not a local module directory (registry modules cannot be fetched or checked offline)`, block.file);
          break;
        }
        for (const k of Object.keys(block.body))
          if (!MODULE_META.has(k) && !target.sym.variable.has(k)) {
            const hint = closest(k, [...target.sym.variable.keys()]);
            report(cfg, argLine(cfg, block, k), subject, `module ${rel(target.dir)} has no variable "${k}"${hint ? ` (did you mean "${hint}"?)` : ""}`, block.file);
          }
        for (const [name, v] of target.sym.variable)
          if (!("default" in v.body) && !(name in block.body)) report(cfg, block.line, subject, `missing required module variable "${name}" (it has no default)`, block.file);
        break;
      }
    }
  }
  return checked;
}

const started = Date.now();
const dirs = listConfigDirs(root);
if (dirs.length === 0) {
  console.error(`validate_terraform: no .tf files under ${root}`);
  process.exit(2);
}
let blocks = 0;
for (const d of dirs) blocks += await validateDir(d);

const ms = Date.now() - started;
if (problems.length) {
  for (const p of problems) console.log(p);
  console.log(`validate_terraform: ${problems.length} problem(s) in ${dirs.length} configuration(s); AWS provider ${schema.providerVersion} schema from @cdktn/provider-aws ${schema.packageVersion} (${ms} ms)`);
  process.exit(1);
}
console.log(`validate_terraform: OK: ${blocks} aws blocks in ${dirs.map(rel).join(", ")} match the AWS provider ${schema.providerVersion} schema (@cdktn/provider-aws ${schema.packageVersion}); all references resolve (${ms} ms)`);
