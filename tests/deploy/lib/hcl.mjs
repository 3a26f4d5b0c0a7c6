// Loading Terraform configuration directories through @cdktf/hcl2json, and the small helpers the
// checks share: source lines for messages, references in expressions, and a tiny evaluator for
// literal values and variable defaults.
//
// hcl2json's shape: every block is a list of bodies (`resource.aws_lb.this` -> [ {...} ]), nested
// blocks are lists of objects, literal attribute values are JSON values, and any expression is a
// string holding a template (`"${var.x}"`, `"arn:${data.aws_partition.current.partition}:iam"`).

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const hcl2json = require("@cdktf/hcl2json");

export function listConfigDirs(root) {
  const dirs = [];
  const walk = (d) => {
    const entries = fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name));
    if (entries.some((e) => e.isFile() && e.name.endsWith(".tf"))) dirs.push(d);
    for (const e of entries) if (e.isDirectory() && !e.name.startsWith(".")) walk(path.join(d, e.name));
  };
  walk(root);
  return dirs;
}

// A directory's configuration: { dir, files: {name: text}, blocks: [...], errors: [...] }.
// blocks: { kind, type?, name?, body, file, line } with kind one of resource, data, variable,
// output, local, module, provider, terraform.
export async function loadConfig(dir) {
  const cfg = { dir, files: {}, blocks: [], errors: [] };
  const names = fs.readdirSync(dir).filter((f) => f.endsWith(".tf")).sort();
  for (const f of names) {
    const text = fs.readFileSync(path.join(dir, f), "utf8");
    cfg.files[f] = text;
    let parsed;
    try {
      parsed = await hcl2json.parse(f, text);
    } catch (e) {
      const msg = String(e.message || e).trim();
      const at = new RegExp(`${esc(f)}:(\\d+),`).exec(msg);
      cfg.errors.push({ file: f, line: at ? Number(at[1]) : 0, msg: `HCL syntax error: ${msg}` });
      continue;
    }
    const lineOf = (re) => findLine(text, re);
    for (const [type, byName] of Object.entries(parsed.resource || {}))
      for (const [name, bodies] of Object.entries(byName))
        for (const body of bodies)
          cfg.blocks.push({ kind: "resource", type, name, body, file: f, line: lineOf(blockHeader("resource", type, name)) });
    for (const [type, byName] of Object.entries(parsed.data || {}))
      for (const [name, bodies] of Object.entries(byName))
        for (const body of bodies)
          cfg.blocks.push({ kind: "data", type, name, body, file: f, line: lineOf(blockHeader("data", type, name)) });
    for (const kind of ["variable", "output", "module"])
      for (const [name, bodies] of Object.entries(parsed[kind] || {}))
        for (const body of bodies) cfg.blocks.push({ kind, name, body, file: f, line: lineOf(blockHeader(kind, name)) });
    for (const [name, bodies] of Object.entries(parsed.provider || {}))
      for (const body of bodies) cfg.blocks.push({ kind: "provider", type: name, name, body, file: f, line: lineOf(blockHeader("provider", name)) });
    for (const body of parsed.terraform || []) cfg.blocks.push({ kind: "terraform", body, file: f, line: lineOf(/^terraform\s*\{/m) });
    for (const locals of parsed.locals || [])
      for (const [name, value] of Object.entries(locals))
        cfg.blocks.push({ kind: "local", name, body: value, file: f, line: lineOf(new RegExp(`^\\s*${esc(name)}\\s*=`, "m")) });
    for (const k of Object.keys(parsed))
      if (!["resource", "data", "variable", "output", "module", "provider", "terraform", "locals"].includes(k))
        cfg.errors.push({ file: f, line: 0, msg: `unsupported top-level block "${k}"` });
  }
  return cfg;
}

function esc(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function blockHeader(kind, ...labels) {
  return new RegExp(`^${kind}${labels.map((l) => `\\s+"${esc(l)}"`).join("")}\\s*\\{`, "m");
}

export function findLine(text, re, fromLine = 1) {
  const lines = text.split("\n");
  const flags = re.flags.replace("g", "").replace("m", "");
  const single = new RegExp(re.source, flags);
  for (let i = Math.max(0, fromLine - 1); i < lines.length; i++) if (single.test(lines[i])) return i + 1;
  return fromLine > 1 ? findLine(text, re, 1) : 0;
}

// The line of `name =` or `name {` at or after a block's header line.
export function argLine(cfg, block, name) {
  const text = cfg.files[block.file];
  const re = new RegExp(`^\\s*(?:${esc(name)}\\s*=|${esc(name)}\\s*\\{|dynamic\\s+"${esc(name)}")`);
  const lines = text.split("\n");
  for (let i = Math.max(0, block.line - 1); i < lines.length; i++) {
    if (i > block.line - 1 && /^(resource|data|variable|output|module|provider|locals|terraform)\b/.test(lines[i])) break;
    if (re.test(lines[i])) return i + 1;
  }
  return block.line;
}

export const isExpr = (v) => typeof v === "string" && (v.includes("${") || v.includes("%{"));

// Every string anywhere in a value, with the path that leads to it.
export function* strings(value, p = []) {
  if (typeof value === "string") yield [value, p];
  else if (Array.isArray(value)) for (let i = 0; i < value.length; i++) yield* strings(value[i], [...p, i]);
  else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) yield* strings(v, [...p, k]);
}

// The interpolation sources of a template string: the text inside each ${ ... } and %{ ... }.
export function interpolations(template) {
  const out = [];
  let i = 0;
  while (i < template.length) {
    const c = template[i];
    if ((c === "$" || c === "%") && template[i + 1] === "{") {
      if (template[i - 1] === c) {
        i += 2; // $${ and %%{ are escapes
        continue;
      }
      const end = matchBrace(template, i + 1);
      out.push(template.slice(i + 2, end));
      i = end + 1;
    } else i++;
  }
  return out;
}

// Index of the } closing the { at `open`, skipping quoted strings (and their own templates).
function matchBrace(s, open) {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === '"') {
      i = skipString(s, i);
      continue;
    }
    if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return i;
  }
  return s.length;
}

function skipString(s, q) {
  for (let i = q + 1; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if ((s[i] === "$" || s[i] === "%") && s[i + 1] === "{") i = matchBrace(s, i + 1);
    else if (s[i] === '"') return i;
  }
  return s.length;
}

const ROOTS = new Set(["var", "local", "module", "data", "each", "count", "self", "path", "terraform"]);

// References in an expression: [{ root, parts: [{name}|{index}|{splat}], text }].
// Quoted strings are skipped except for their own ${...} parts, so "aws_lb.x" in a literal is not
// a reference; for-expression variables and function names are not references either, because
// only the roots above and aws_* resource types are collected.
export function references(expr) {
  const refs = [];
  for (const src of interpolations(expr)) scanExpression(src, refs);
  return refs;
}

function scanExpression(src, refs) {
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === '"') {
      const end = skipString(src, i);
      for (const inner of interpolations(src.slice(i + 1, end))) scanExpression(inner, refs);
      i = end + 1;
      continue;
    }
    if (/[A-Za-z_]/.test(c) && !/[\w.\-]/.test(src[i - 1] || "")) {
      const m = /^[A-Za-z_][\w-]*/.exec(src.slice(i));
      const root = m[0];
      let j = i + root.length;
      const parts = [];
      for (;;) {
        const rest = src.slice(j);
        let mm;
        if ((mm = /^\s*\.\s*([A-Za-z_][\w-]*)/.exec(rest))) parts.push({ name: mm[1] });
        else if ((mm = /^\s*\.\s*([0-9]+)/.exec(rest))) parts.push({ index: mm[1] });
        else if ((mm = /^\s*\[\s*\*\s*\]/.exec(rest)) || (mm = /^\s*\.\s*\*/.exec(rest))) parts.push({ splat: true });
        else if ((mm = /^\s*\[/.exec(rest))) {
          const close = matchBracket(src, j + mm[0].length - 1);
          const inner = src.slice(j + mm[0].length, close);
          scanExpression(inner, refs);
          parts.push({ index: inner.trim() });
          j = close + 1;
          continue;
        } else break;
        j += mm[0].length;
      }
      const isResourceType = /^aws_[a-z0-9_]+$/.test(root) && parts.length > 0 && parts[0].name;
      if (ROOTS.has(root) || isResourceType) refs.push({ root, parts, text: src.slice(i, j).replace(/\s+/g, "") });
      i = j;
      continue;
    }
    i++;
  }
}

function matchBracket(s, open) {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === '"') {
      i = skipString(s, i);
      continue;
    }
    if (c === "[") depth++;
    else if (c === "]" && --depth === 0) return i;
  }
  return s.length;
}

// ---- a tiny evaluator, for the invariant checks -------------------------------------------------
// Evaluates literals, "${var.x}" (the variable's default, or an override), "${local.x}" when that
// local is itself evaluable, "${tostring(...)}"/"${tonumber(...)}" of those, and "${A + count.index}".
// Anything else gives undefined.

export function evaluator(cfg, overrides = {}) {
  const vars = new Map(cfg.blocks.filter((b) => b.kind === "variable").map((b) => [b.name, b.body]));
  const locals = new Map(cfg.blocks.filter((b) => b.kind === "local").map((b) => [b.name, b.body]));
  const ev = (v, depth = 0) => {
    if (depth > 10) return undefined;
    if (typeof v !== "string") return v;
    if (!isExpr(v)) return v;
    const whole = /^\$\{(.*)\}$/s.exec(v);
    if (!whole || interpolations(v).length !== 1) {
      // A template with literal parts: evaluate each interpolation, fail if one is unknown.
      let ok = true;
      const out = v.replace(/\$\{([^{}]*)\}/g, (_, e) => {
        const r = ev("${" + e + "}", depth + 1);
        if (r === undefined || typeof r === "object") ok = false;
        return String(r);
      });
      return ok && !isExpr(out) ? out : undefined;
    }
    const e = whole[1].trim();
    let m;
    if ((m = /^var\.([\w-]+)$/.exec(e))) {
      if (m[1] in overrides) return overrides[m[1]];
      const body = vars.get(m[1]);
      return body && "default" in body ? ev(body.default, depth + 1) : undefined;
    }
    if ((m = /^local\.([\w-]+)$/.exec(e))) return locals.has(m[1]) ? ev(locals.get(m[1]), depth + 1) : undefined;
    if ((m = /^to(string|number)\((.*)\)$/.exec(e))) {
      const r = ev("${" + m[2] + "}", depth + 1);
      if (r === undefined) return undefined;
      return m[1] === "string" ? String(r) : Number(r);
    }
    if ((m = /^(\d+)\s*\+\s*count\.index$/.exec(e))) return { countBase: Number(m[1]) };
    if (/^-?\d+(\.\d+)?$/.test(e)) return Number(e);
    if (e === "true" || e === "false") return e === "true";
    if ((m = /^"([^"$%\\]*)"$/.exec(e))) return m[1];
    return undefined;
  };
  return ev;
}
