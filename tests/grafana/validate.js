// validate.js: a Grafana dashboard's JSON against Grafana's dashboard model,
// offline.
//
//   node validate.js DASHBOARD.json   (this file beside the node_modules of
//                                      this package: tests/test_grafana_dashboard.sh)
//
// 1. The file parses as JSON, with no duplicate keys.
// 2. TypeScript checks it against @grafana/schema: the dashboard as a
//    Dashboard, each panel as a Panel or RowPanel, each panel's options and
//    fieldConfig.defaults.custom as its panel type's Options and FieldConfig,
//    each query as a Prometheus query. Object literals get excess-property
//    checks, so a field Grafana does not have is a finding, as are wrong
//    types, values outside an enum and missing required fields.
// 3. What Grafana relies on beyond the types: a schemaVersion it knows, panel
//    ids unique, every gridPos inside the 24 columns and no two panels
//    overlapping, every panel and query on the dashboard's Prometheus data
//    source variable, every $variable used defined, each query with an expr
//    and a refId unique within its panel.
// Exit 1 on any finding (all printed on stderr).
"use strict";
const fs = require("fs");
const path = require("path");
const ts = require("typescript");

const file = process.argv[2];
if (!file) { console.error("usage: node validate.js DASHBOARD.json"); process.exit(2); }
const problems = [];
const fail = (where, msg) => problems.push(`${where}: ${msg}`);
const SCHEMA = "@grafana/schema";
const schemaPkg = require(`${SCHEMA}/package.json`);

// ---- 1. parse ----
const text = fs.readFileSync(file, "utf8");
let dash;
try {
  dash = JSON.parse(text);
} catch (e) {
  console.error(`${file}: JSON: ${e.message}`);
  process.exit(1);
}
// JSON.parse keeps the last of duplicate keys; Grafana's Go side may not.
{
  const dupes = duplicateKeys(text);
  for (const d of dupes) fail(file, `duplicate key ${d}`);
}
if (dash === null || typeof dash !== "object" || Array.isArray(dash)) {
  console.error(`${file}: not a JSON object`);
  process.exit(1);
}

// Every panel, with rows' nested panels after their row: {p, where, row}.
const panels = [];
for (const [i, p] of (Array.isArray(dash.panels) ? dash.panels : []).entries()) {
  panels.push({ p, where: panelWhere(p, `panels[${i}]`), row: null });
  if (p && p.type === "row" && Array.isArray(p.panels))
    for (const [j, q] of p.panels.entries())
      panels.push({ p: q, where: panelWhere(q, `panels[${i}].panels[${j}]`), row: p });
}
if (panels.length === 0) fail(file, "no panels");

// ---- 2. types ----
// Panel types @grafana/schema has options for: its exports name each one
// ./dist/esm/raw/composable/<dir>/panelcfg/x/<Name>_types.gen.
const panelCfg = new Map(); // dir -> {module, options, fieldConfig}
for (const key of Object.keys(schemaPkg.exports || {})) {
  const m = key.match(/^\.\/dist\/esm\/raw\/composable\/([^/]+)\/panelcfg\/x\/\w+_types\.gen$/);
  if (!m) continue;
  const dts = require.resolve(`${SCHEMA}/package.json`).replace(/package\.json$/, "") +
    schemaPkg.exports[key].types.replace(/^\.\//, "");
  const src = fs.readFileSync(dts, "utf8");
  panelCfg.set(m[1], {
    module: `${SCHEMA}${key.slice(1)}`,
    options: /export interface Options\b/.test(src),
    fieldConfig: /export interface FieldConfig\b/.test(src),
  });
}
// Grafana's panel ids whose schema directory is not the id without dashes.
const PANEL_DIR = { dashlist: "dashboardlist", annolist: "annotationslist" };
const cfgFor = (type) =>
  panelCfg.get(PANEL_DIR[type] || String(type).toLowerCase().replace(/-/g, ""));
{
  const consts = new Map(); // const name -> where
  const imports = new Map(); // module -> alias
  const alias = (mod) => {
    if (!imports.has(mod)) imports.set(mod, `M${imports.size}`);
    return imports.get(mod);
  };
  const D = alias(`${SCHEMA}/dist/esm/raw/dashboard/x/Dashboard_types.gen`);
  const lines = [];
  const lit = (v) => JSON.stringify(v, null, 1);
  // A panel's place in its parent holds REF + the name of its typed constant.
  const REF = "\u0000ref:";
  const unref = (s) => s.replace(/"\\u0000ref:(\w+)"/g, "$1");
  const decl = (name, where, type, value) => {
    consts.set(name, where);
    lines.push(`export const ${name}: J<${type}> = ${lit(value)};`);
  };
  const panelConst = ({ p, where }, k) => {
    const name = `panel${k}`;
    if (!p || typeof p !== "object" || Array.isArray(p)) {
      decl(name, where, `${D}.Panel`, p);
      return name;
    }
    const copy = { ...p };
    if (p.type === "row") {
      if (Array.isArray(p.panels))
        copy.panels = p.panels.map((q, j) => REF + panelConst(panels.find((e) => e.p === q && e.row === p), `${k}_${j}`));
    } else {
      const cfg = cfgFor(p.type);
      if (cfg && cfg.options && p.options !== undefined)
        decl(`${name}_options`, `${where} options`, `${alias(cfg.module)}.Options`, p.options);
      const custom = p.fieldConfig && p.fieldConfig.defaults && p.fieldConfig.defaults.custom;
      if (cfg && cfg.fieldConfig && custom !== undefined)
        decl(`${name}_custom`, `${where} fieldConfig.defaults.custom`, `${alias(cfg.module)}.FieldConfig`, custom);
      if (Array.isArray(p.targets))
        p.targets.forEach((t, i) =>
          decl(`${name}_target${i}`, `${where} targets[${i}]`, "PromQuery", t));
    }
    consts.set(name, where);
    lines.push(`export const ${name}: J<${p.type === "row" ? `${D}.RowPanel` : `${D}.Panel`}> = ` +
               `${unref(lit(copy))};`);
    return name;
  };
  const top = Array.isArray(dash.panels)
    ? dash.panels.map((p, i) => REF + panelConst(panels.find((e) => e.p === p && !e.row), String(i)))
    : dash.panels;
  consts.set("dashboard", file);
  lines.push(`export const dashboard: J<Dashboard> = ` +
             `${unref(lit({ ...dash, panels: top }))};`);

  const src = [
    ...[...imports].map(([mod, a]) => `import type * as ${a} from "${mod}";`),
    `import type * as common from "${SCHEMA}";`,
    // JSON has no enums: a string enum's member is its string here.
    "type J<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T :",
    "  T extends Array<infer U> ? Array<J<U>> : T extends object ? { [K in keyof T]: J<T[K]> } : T;",
    // A query variable's definition (the text Grafana lists it with) is in
    // Grafana's QueryVariableModel and @grafana/schema's v2 dashboard
    // (QueryVariableSpec), not in the v1 Dashboard type.
    `type Dashboard = Omit<${D}.Dashboard, "templating"> & {`,
    `  templating?: { list?: Array<${D}.VariableModel & { definition?: string }> };`,
    "};",
    // @grafana/schema has no Prometheus query type: Grafana's
    // PrometheusDataQuery kind (the Prometheus data source's dataquery.cue)
    // and the fields its query editor saves.
    "interface PromQuery extends common.DataQuery {",
    "  expr: string; legendFormat?: string; instant?: boolean; range?: boolean;",
    "  exemplar?: boolean; format?: 'time_series' | 'table' | 'heatmap';",
    "  editorMode?: 'code' | 'builder'; interval?: string; intervalFactor?: number;",
    "  intervalMs?: number; hinting?: boolean;",
    "}",
    ...lines,
  ].join("\n") + "\n";

  const virt = path.join(__dirname, "dashboard.check.ts");
  const options = {
    strict: true, noEmit: true, skipLibCheck: true, types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) =>
    path.resolve(f) === virt ? ts.createSourceFile(f, src, lang) : getSourceFile(f, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (f) => path.resolve(f) === virt || fileExists(f);
  const readFile = host.readFile.bind(host);
  host.readFile = (f) => (path.resolve(f) === virt ? src : readFile(f));
  const program = ts.createProgram([virt], options, host);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    // The last line of a chain says where it went wrong; the first, what.
    const chain = ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n").map((s) => s.trim());
    const msg = (chain.length > 2 ? `${chain[0]} ... ${chain[chain.length - 1]}` : chain.join(" "))
      .replace(/'([^']{70})[^']{4,}'/g, "'$1...'"); // long expanded types
    let where = "types";
    if (d.file && d.start !== undefined && path.resolve(d.file.fileName) === virt) {
      const [name, at] = jsonPath(d.file, d.start);
      where = `${consts.get(name) || name}${at ? ` at ${at}` : ""}`;
    } else if (d.file) {
      where = `types (${path.basename(d.file.fileName)})`;
    }
    fail(where, `schema: ${msg}`);
  }
  if (process.env.GRAFANA_VALIDATE_KEEP_TS) fs.writeFileSync(process.env.GRAFANA_VALIDATE_KEEP_TS, src);
}

// ---- 3. what Grafana relies on ----
// schemaVersion: Grafana migrates older ones up; a newer one than this
// schema's is from a Grafana we have not checked against.
{
  const latest = require(`${SCHEMA}/dist/esm/raw/dashboard/x/Dashboard_types.gen`).defaultDashboard.schemaVersion;
  const v = dash.schemaVersion;
  if (!Number.isInteger(v)) fail(file, "no schemaVersion (Grafana would treat it as a very old dashboard)");
  else if (v > latest) fail(file, `schemaVersion ${v} is newer than @grafana/schema ${schemaPkg.version}'s ${latest}`);
  if (typeof dash.uid === "string" && !/^[a-zA-Z0-9_-]{1,40}$/.test(dash.uid))
    fail(file, `uid "${dash.uid}": Grafana takes 1-40 letters, digits, - and _`);
  if (!dash.title) fail(file, "no title");
}

// Panel ids unique; every panel has a type.
{
  const seen = new Map();
  for (const { p, where } of panels) {
    if (!p || typeof p !== "object") continue;
    if (!Number.isInteger(p.id)) fail(where, "no integer id");
    else if (seen.has(p.id)) fail(where, `id ${p.id} already used by ${seen.get(p.id)}`);
    else seen.set(p.id, where);
    if (p.type !== "row" && !cfgFor(p.type))
      fail(where, `panel type "${p.type}" has no schema in @grafana/schema ${schemaPkg.version}`);
  }
}

// gridPos: 24 columns, no overlaps. The top level is one grid; a collapsed
// row's panels are another (laid out when it opens). An open row holds no
// panels: its panels follow it at the top level.
{
  const grids = [panels.filter((e) => !e.row)];
  for (const { p, where, row } of panels) {
    if (!p || p.type !== "row") continue;
    if (row) fail(where, "a row inside a row");
    if (p.collapsed === false && Array.isArray(p.panels) && p.panels.length > 0)
      fail(where, "an open row must have panels: [] (its panels follow it at the top level)");
    if (p.collapsed) grids.push(panels.filter((e) => e.row === p));
  }
  for (const grid of grids) {
    const placed = [];
    for (const { p, where } of grid) {
      if (!p || typeof p !== "object") continue;
      const g = p.gridPos;
      if (!g || typeof g !== "object") { fail(where, "no gridPos"); continue; }
      const bad = ["x", "y", "w", "h"].filter((k) => !Number.isInteger(g[k]));
      if (bad.length) { fail(where, `gridPos ${bad.join(", ")} not an integer`); continue; }
      if (g.x < 0 || g.y < 0 || g.w < 1 || g.h < 1)
        fail(where, `gridPos ${JSON.stringify(g)}: x, y >= 0 and w, h >= 1`);
      if (g.x + g.w > 24) fail(where, `gridPos x ${g.x} + w ${g.w} > 24 columns`);
      for (const o of placed) {
        const h = o.g;
        if (g.x < h.x + h.w && h.x < g.x + g.w && g.y < h.y + h.h && h.y < g.y + g.h)
          fail(where, `gridPos ${JSON.stringify(g)} overlaps ${o.where} ${JSON.stringify(h)}`);
      }
      placed.push({ g, where });
    }
  }
}

// Data sources: the dashboard has a Prometheus data source variable, and
// every panel, query and query variable uses it, so picking a data source
// at the top moves them all.
const vars = (dash.templating && Array.isArray(dash.templating.list)) ? dash.templating.list : [];
{
  const dsVars = vars.filter((v) => v && v.type === "datasource" && v.query === "prometheus");
  if (dsVars.length !== 1) {
    fail(file, `want one data source variable of type prometheus in templating, found ${dsVars.length}`);
  } else {
    const name = dsVars[0].name;
    const uids = new Set([`\${${name}}`, `$${name}`]);
    const isOurs = (ds) => ds && typeof ds === "object" && ds.type === "prometheus" && uids.has(ds.uid);
    const want = `{"type": "prometheus", "uid": "\${${name}}"}`;
    for (const { p, where } of panels) {
      if (!p || typeof p !== "object") continue;
      if (p.type === "row") {
        if (p.datasource !== undefined && p.datasource !== null && !isOurs(p.datasource))
          fail(where, `row datasource ${JSON.stringify(p.datasource)}, want ${want}`);
        continue;
      }
      if (!isOurs(p.datasource))
        fail(where, `datasource ${JSON.stringify(p.datasource)}, want ${want} (the $${name} variable)`);
      for (const [i, t] of (Array.isArray(p.targets) ? p.targets : []).entries())
        if (t && t.datasource !== undefined && !isOurs(t.datasource))
          fail(`${where} targets[${i}]`, `datasource ${JSON.stringify(t.datasource)}, want ${want}`);
    }
    for (const v of vars)
      if (v && v.type === "query" && !isOurs(v.datasource))
        fail(`variable ${v.name}`, `datasource ${JSON.stringify(v.datasource)}, want ${want}`);
    for (const [i, a] of ((dash.annotations && dash.annotations.list) || []).entries())
      if (a && !a.builtIn && !isOurs(a.datasource))
        fail(`annotations[${i}]`, `datasource ${JSON.stringify(a.datasource)}, want ${want}`);
  }
}

// Variables: defined once, and every one used is defined. Grafana's syntax
// (templateSrv's variableRegex): $name, ${name}, ${name:format},
// ${name.field}, [[name]]. $__... are Grafana's own; $1 is a regex group.
{
  const defined = new Map();
  for (const [i, v] of vars.entries()) {
    if (!v || typeof v.name !== "string" || !/^\w+$/.test(v.name)) {
      fail(`templating.list[${i}]`, `variable name ${JSON.stringify(v && v.name)}`);
      continue;
    }
    if (defined.has(v.name)) fail(`templating.list[${i}]`, `variable ${v.name} defined twice`);
    defined.set(v.name, i);
  }
  const re = /\$(\w+)|\[\[(\w+?)(?::\w+)?\]\]|\$\{(\w+)(?:\.[^:^}]+)?(?::[^}]+)?\}/g;
  const walk = (v, where) => {
    if (typeof v === "string") {
      for (const m of v.matchAll(re)) {
        const name = m[1] || m[2] || m[3];
        if (name.startsWith("__") || /^\d+$/.test(name)) continue;
        if (!defined.has(name)) fail(where, `variable $${name} is not defined (in ${JSON.stringify(v)})`);
      }
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, `${where}[${i}]`));
    } else if (v && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) walk(x, where ? `${where}.${k}` : k);
    }
  };
  walk(dash, "");
}

// Queries: each has an expr and a refId unique within its panel.
for (const { p, where } of panels) {
  if (!p || typeof p !== "object" || p.type === "row") continue;
  if (!Array.isArray(p.targets) || p.targets.length === 0) { fail(where, "no targets"); continue; }
  const refs = new Set();
  for (const [i, t] of p.targets.entries()) {
    const tw = `${where} targets[${i}]`;
    if (!t || typeof t !== "object") { fail(tw, "not an object"); continue; }
    if (typeof t.refId !== "string" || t.refId === "") fail(tw, "no refId");
    else if (refs.has(t.refId)) fail(tw, `refId ${t.refId} used twice in the panel`);
    else refs.add(t.refId);
    if (typeof t.expr !== "string" || t.expr.trim() === "") fail(tw, "no expr");
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  console.error(`${file}: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`${file}: valid (${panels.length} panels, @grafana/schema ${schemaPkg.version}, schemaVersion ${dash.schemaVersion})`);

// Where in a typed constant of the generated source a position is:
// [constant, "key.key[n]..."].
function jsonPath(sf, pos) {
  let node = sf;
  for (;;) {
    const next = node.getChildren(sf).find((c) => c.getStart(sf) <= pos && pos < c.getEnd());
    if (!next) break;
    node = next;
  }
  const parts = [];
  for (let n = node; n.parent; n = n.parent) {
    const up = n.parent;
    if (ts.isPropertyAssignment(n)) parts.unshift(`.${n.name.text}`);
    else if (ts.isArrayLiteralExpression(up)) parts.unshift(`[${up.elements.indexOf(n)}]`);
    if (ts.isVariableDeclaration(up)) return [up.name.text, parts.join("").replace(/^\./, "")];
  }
  return ["types", ""];
}

function panelWhere(p, at) {
  if (!p || typeof p !== "object") return at;
  return `${at} (id ${p.id}, ${p.type} "${p.title || ""}")`;
}

// Keys repeated within one JSON object, as "path.key".
function duplicateKeys(s) {
  const out = [];
  let i = 0;
  const ws = () => { while (/\s/.test(s[i])) i++; };
  const str = () => {
    const start = i++;
    while (s[i] !== '"') i += s[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(s.slice(start, i));
  };
  const value = (at) => {
    ws();
    if (s[i] === "{") {
      i++;
      const keys = new Set();
      ws();
      if (s[i] === "}") { i++; return; }
      for (;;) {
        ws();
        const k = str();
        if (keys.has(k)) out.push(`${at}.${k}`);
        keys.add(k);
        ws(); i++; // :
        value(`${at}.${k}`);
        ws();
        if (s[i++] === "}") return;
      }
    } else if (s[i] === "[") {
      i++;
      ws();
      if (s[i] === "]") { i++; return; }
      for (let n = 0; ; n++) {
        value(`${at}[${n}]`);
        ws();
        if (s[i++] === "]") return;
      }
    } else if (s[i] === '"') {
      str();
    } else {
      while (i < s.length && !/[\s,\]}]/.test(s[i])) i++;
    }
  };
  value("$");
  return out;
}
