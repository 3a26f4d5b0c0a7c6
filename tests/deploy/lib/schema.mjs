// The AWS provider schema, read from the type declarations that @cdktn/provider-aws generates
// from the provider itself (`cdktn get` runs `terraform providers schema -json`).
//
// For every resource, data source and the provider there is lib/<dir>/index.d.ts with:
//   - `static readonly tfResourceType = "aws_lb_target_group";` on the main class, which extends
//     cdktn.TerraformResource, cdktn.TerraformDataSource or cdktn.TerraformProvider;
//   - `export interface <Class>Config` with one member per argument and nested block. Each member
//     carries a doc link whose anchor is the Terraform name (`...#proxy_protocol_v2 ...`); a
//     member without `?` is required; a nested block's doc starts with `<name> block`, its type is
//     the block's own interface, written `T` for a block of at most one (MaxItems 1) and
//     `T[] | cdktn.IResolvable` for a list or set of blocks.
// lib/<dir>/index.js marks every attribute of the main class with a comment
// `// arn_suffix - computed: true, optional: false, required: false`, which gives the names a
// reference (`aws_lb.this.arn_suffix`) may read, computed-only ones included.

import fs from "node:fs";
import path from "node:path";

const KIND_BY_BASE = {
  TerraformResource: "resource",
  TerraformDataSource: "data",
  TerraformProvider: "provider",
  TerraformEphemeralResource: "ephemeral",
};

function camelToSnake(s) {
  return s.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
}

// Reads the TypeScript type that starts at text[i] up to the `;` that ends the member.
function readType(text, i) {
  let depth = 0;
  const start = i;
  for (; i < text.length; i++) {
    const c = text[i];
    if (c === "{" || c === "(" || c === "[" || c === "<") depth++;
    else if (c === "}" || c === ")" || c === "]" || c === ">") depth--;
    else if (c === ";" && depth === 0) break;
  }
  return { type: text.slice(start, i).replace(/\s+/g, " ").trim(), end: i + 1 };
}

function valueKind(type) {
  const t = type.replace(/\s*\|\s*cdktn\.IResolvable/g, "").trim();
  if (t === "string") return "string";
  if (t === "number") return "number";
  if (t === "boolean") return "bool";
  if (/\[\]$/.test(t)) return "list";
  if (/^\{ \[key: string\]/.test(t)) return "map";
  return "any";
}

// Parses every `export interface X { ... }` of a declaration file.
export function parseInterfaces(text) {
  const out = new Map();
  const re = /^export interface (\w+)(?: extends [\w.]+)? \{\n/gm;
  let m;
  while ((m = re.exec(text))) {
    const bodyStart = re.lastIndex;
    const bodyEnd = text.indexOf("\n}\n", bodyStart);
    const body = text.slice(bodyStart, bodyEnd === -1 ? text.length : bodyEnd + 1);
    const members = new Map();
    const mre = /(?:\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*)?readonly (\w+)(\??): /g;
    let mm;
    while ((mm = mre.exec(body))) {
      const doc = mm[1] || "";
      const { type, end } = readType(body, mre.lastIndex);
      mre.lastIndex = end;
      const link = /\{@link https?:\/\/\S+#([A-Za-z0-9_]+) [^}]*\}/.exec(doc);
      const name = link ? link[1] : camelToSnake(mm[2]);
      const isBlock = /^\s*\*\s*[A-Za-z0-9_]+ block\s*$/m.test(doc);
      const member = { name, required: mm[3] !== "?", isBlock, type };
      if (isBlock) {
        const bm = /^(\w+)(\[\])?/.exec(type.replace(/^\(/, ""));
        member.blockType = bm ? bm[1] : null;
        member.maxOne = bm ? !bm[2] : false;
      } else {
        member.kind = valueKind(type);
      }
      members.set(name, member);
    }
    out.set(m[1], members);
  }
  return out;
}

function attributeComments(js, className) {
  const names = new Set();
  const at = js.search(new RegExp(`\\nclass ${className} extends cdktn\\.Terraform`));
  if (at === -1) return names;
  const re = /\/\/ ([A-Za-z0-9_]+) - computed: (?:true|false), optional: (?:true|false), required: (?:true|false)/g;
  re.lastIndex = at;
  let m;
  while ((m = re.exec(js))) names.add(m[1]);
  return names;
}

export class ProviderSchema {
  constructor(packageDir) {
    this.packageDir = packageDir;
    this.libDir = path.join(packageDir, "lib");
    const pkg = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8"));
    this.packageVersion = pkg.version;
    this.providerVersion = pkg.cdktf?.provider?.version ?? null;
    this.providerSource = pkg.cdktf?.provider?.name ?? null;
    this.cache = new Map();
    this.fullIndex = null;
  }

  // Reads the main class of lib/<dir>: { tfType, kind, className } or null.
  static header(dts) {
    const m = /export declare class (\w+) extends cdktn\.(Terraform\w+) \{\n\s*static readonly tfResourceType = "([^"]+)";/.exec(dts);
    if (!m || !KIND_BY_BASE[m[2]]) return null;
    return { className: m[1], kind: KIND_BY_BASE[m[2]], tfType: m[3] };
  }

  buildFullIndex() {
    if (this.fullIndex) return this.fullIndex;
    const idx = new Map();
    for (const dir of fs.readdirSync(this.libDir)) {
      const file = path.join(this.libDir, dir, "index.d.ts");
      if (!fs.existsSync(file)) continue;
      const h = ProviderSchema.header(fs.readFileSync(file, "utf8"));
      if (h) idx.set(`${h.kind}:${h.tfType}`, dir);
    }
    this.fullIndex = idx;
    return idx;
  }

  // All type names of one kind, for "did you mean" hints.
  typeNames(kind) {
    return [...this.buildFullIndex().keys()].filter((k) => k.startsWith(kind + ":")).map((k) => k.slice(kind.length + 1));
  }

  load(kind, tfType) {
    const key = `${kind}:${tfType}`;
    if (this.cache.has(key)) return this.cache.get(key);
    let dir = null;
    const guess =
      kind === "provider" ? "provider" : (kind === "data" ? "data-" : kind === "ephemeral" ? "ephemeral-" : "") +
        (kind === "resource" ? tfType.replace(/^aws_/, "") : tfType).replace(/_/g, "-");
    const tryDir = (d) => {
      const f = path.join(this.libDir, d, "index.d.ts");
      if (!fs.existsSync(f)) return null;
      const dts = fs.readFileSync(f, "utf8");
      const h = ProviderSchema.header(dts);
      return h && h.kind === kind && h.tfType === tfType ? { dts, h, d } : null;
    };
    let hit = tryDir(guess);
    if (!hit) {
      dir = this.buildFullIndex().get(key);
      if (dir) hit = tryDir(dir);
    }
    if (!hit) {
      this.cache.set(key, null);
      return null;
    }
    const interfaces = parseInterfaces(hit.dts);
    const configName = `${hit.h.className}Config`;
    const js = fs.readFileSync(path.join(this.libDir, hit.d, "index.js"), "utf8");
    const attrs = attributeComments(js, hit.h.className);
    const root = interfaces.get(configName);
    if (!root) throw new Error(`schema: no interface ${configName} in lib/${hit.d}/index.d.ts`);
    for (const n of root.keys()) attrs.add(n);
    const schema = { kind, tfType, dir: hit.d, className: hit.h.className, interfaces, root, attributes: attrs };
    this.cache.set(key, schema);
    return schema;
  }
}

export function closest(name, candidates) {
  let best = null;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(name, c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return bestD <= Math.max(2, Math.floor(name.length / 4)) ? best : null;
}

function levenshtein(a, b) {
  const prev = new Array(b.length + 1).fill(0).map((_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}
