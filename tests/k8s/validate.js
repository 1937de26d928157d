// validate.js: deploy/k8s/*.yaml against the Kubernetes API, offline.
//
//   node validate.js DIR      (run from a directory holding this package's
//                              node_modules: tests/test_k8s_manifests.sh)
//
// 1. Every document parses as YAML 1.1 (what Kubernetes reads), with no
//    duplicate keys.
// 2. kubernetes-models validates each object against the API's OpenAPI
//    schema (types, required fields, enums, formats).
// 3. TypeScript, with kubernetes-types, rejects every field the API does not
//    have (the schemas above let unknown fields through; the API server
//    would drop them, or refuse them with strict field validation).
// 4. The objects agree with one another: the headless Service is the
//    StatefulSet's serviceName, each per-pod Service selects a pod that
//    exists, named ports and volumes are defined, derpd's -hostname and
//    -mesh-with name every replica.
// Prints one JSON line per pod: {"pod": "derp-0", "args": [...]}, derpd's
// command line with $(POD_NAME) expanded, for check_flags. Exit 1 on any
// finding (all printed on stderr).
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const ts = require("typescript");

const dir = process.argv[2];
const problems = [];
const fail = (where, msg) => problems.push(`${where}: ${msg}`);

// apiVersion -> [kubernetes-models directory, kubernetes-types module]
const GROUPS = {
  v1: ["v1", "core/v1"],
  "apps/v1": ["apps/v1", "apps/v1"],
  "policy/v1": ["policy/v1", "policy/v1"],
  "networking.k8s.io/v1": ["networking.k8s.io/v1", "networking/v1"],
};

// ---- 1. parse ----
const objects = []; // {file, index, obj, where}
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort()) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(dir, file), "utf8"), {
    version: "1.1",
    uniqueKeys: true,
    prettyErrors: true,
  });
  docs.forEach((d, i) => {
    const where = `${file}#${i}`;
    for (const e of [...d.errors, ...d.warnings]) fail(where, `YAML: ${e.message}`);
    const obj = d.toJS();
    if (obj === null || obj === undefined) return;
    const name = obj.metadata && obj.metadata.name;
    objects.push({ file, index: i, obj, where: `${where} ${obj.kind}/${name}` });
  });
}
if (objects.length === 0) fail(dir, "no Kubernetes objects");

// ---- 2. OpenAPI schemas ----
for (const { obj, where } of objects) {
  const g = GROUPS[obj.apiVersion];
  if (!g) { fail(where, `apiVersion ${obj.apiVersion} not handled here`); continue; }
  let Model;
  try {
    Model = require(`kubernetes-models/${g[0]}/${obj.kind}`)[obj.kind];
  } catch (e) {
    fail(where, `no such kind in ${obj.apiVersion}`);
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    fail(where, `schema: ${e.message}`);
  }
}

// ---- 3. no unknown fields (TypeScript's excess property checks) ----
{
  const lines = [];
  const imports = new Set();
  objects.forEach(({ obj }, i) => {
    const g = GROUPS[obj.apiVersion];
    if (!g) return;
    imports.add(`import type { ${obj.kind} as T${i} } from "kubernetes-types/${g[1]}";`);
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};`);
  });
  const src = [...imports].join("\n") + "\n" + lines.join("\n") + "\n";
  const file = path.resolve("manifests.check.ts");
  fs.writeFileSync(file, src);
  const program = ts.createProgram([file], {
    strict: true, noEmit: true, skipLibCheck: true, types: [],
    module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10,
  });
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    let where = "types";
    if (d.file && d.start !== undefined) {
      // Which object: the nearest "export const oN" above the error.
      const upto = d.file.text.slice(0, d.start);
      const m = [...upto.matchAll(/export const o(\d+)/g)].pop();
      if (m) where = objects[Number(m[1])].where;
    }
    fail(where, `field: ${msg}`);
  }
}

// ---- 4. the objects agree ----
const byKind = (k) => objects.filter((o) => o.obj.kind === k);
const sts = byKind("StatefulSet");
if (sts.length !== 1) fail(dir, `want one StatefulSet, found ${sts.length}`);
const out = [];
for (const { obj: s, where } of sts) {
  const ns = s.metadata.namespace || "default";
  const replicas = s.spec.replicas === undefined ? 1 : s.spec.replicas;
  const pods = Array.from({ length: replicas }, (_, i) => `${s.metadata.name}-${i}`);
  const tpl = s.spec.template;
  const labels = tpl.metadata.labels || {};
  for (const [k, v] of Object.entries(s.spec.selector.matchLabels || {}))
    if (labels[k] !== v) fail(where, `selector ${k}=${v} does not match the pod template's labels`);

  const headless = byKind("Service").find((o) => o.obj.metadata.name === s.spec.serviceName);
  if (!headless) fail(where, `no Service ${s.spec.serviceName} (serviceName)`);
  else if (headless.obj.spec.clusterIP !== "None") fail(headless.where, "the serviceName Service must be headless");

  const volumes = new Set([...(tpl.spec.volumes || []).map((v) => v.name),
                           ...(s.spec.volumeClaimTemplates || []).map((v) => v.metadata.name)]);
  const containers = [...(tpl.spec.initContainers || []), ...tpl.spec.containers];
  const ports = new Map(); // name -> protocol
  for (const c of containers) {
    for (const m of c.volumeMounts || [])
      if (!volumes.has(m.name)) fail(where, `container ${c.name} mounts undefined volume ${m.name}`);
    for (const p of c.ports || []) if (p.name) ports.set(p.name, p.protocol || "TCP");
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
      const port = probe && (probe.httpGet || probe.tcpSocket || {}).port;
      if (typeof port === "string" && !ports.has(port)) fail(where, `container ${c.name}: probe port ${port} undefined`);
    }
  }

  // Per-pod Services: each selects a pod that exists, with named ports it has.
  for (const { obj: svc, where: sw } of byKind("Service")) {
    if (svc.metadata.namespace !== s.metadata.namespace) fail(sw, "not in the StatefulSet's namespace");
    const sel = svc.spec.selector || {};
    const pod = sel["statefulset.kubernetes.io/pod-name"];
    if (pod !== undefined && !pods.includes(pod)) fail(sw, `selects pod ${pod}, which the StatefulSet does not make`);
    for (const p of svc.spec.ports || []) {
      if (typeof p.targetPort !== "string") continue;
      if (!ports.has(p.targetPort)) fail(sw, `targetPort ${p.targetPort} is no container port`);
      else if (ports.get(p.targetPort) !== (p.protocol || "TCP"))
        fail(sw, `port ${p.name}: protocol ${p.protocol} against the container's ${ports.get(p.targetPort)}`);
    }
  }
  const perPod = new Set(byKind("Service").map((o) => (o.obj.spec.selector || {})["statefulset.kubernetes.io/pod-name"]));
  for (const p of pods) if (!perPod.has(p)) fail(where, `pod ${p} has no Service of its own (public address)`);

  // derpd's command line, per pod.
  const d = tpl.spec.containers.find((c) => (c.command || [])[0] === "/usr/bin/derpd");
  if (!d) { fail(where, "no container runs /usr/bin/derpd"); continue; }
  const fieldEnv = new Map((d.env || []).filter((e) => e.valueFrom && e.valueFrom.fieldRef)
                                          .map((e) => [e.name, e.valueFrom.fieldRef.fieldPath]));
  for (const pod of pods) {
    const args = (d.args || []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v) => {
      if (fieldEnv.get(v) === "metadata.name") return pod;
      fail(where, `${a}: $(${v}) is not an env var from metadata.name`);
      return m;
    }));
    const flag = (n) => { const a = args.find((x) => x.startsWith(`-${n}=`) || x.startsWith(`--${n}=`)); return a && a.slice(a.indexOf("=") + 1); };
    const host = flag("hostname") || "";
    const mesh = (flag("mesh-with") || "").split(",").filter(Boolean);
    const svcDns = `${s.spec.serviceName}.${ns}.svc.cluster.local`;
    if (!host.startsWith(`${pod}.`)) fail(where, `${pod}: -hostname=${host} does not name the pod`);
    if (mesh.length !== replicas) fail(where, `-mesh-with has ${mesh.length} entries for ${replicas} replicas`);
    pods.forEach((p) => {
      const want = `${host.replace(pod, p)}/${p}.${svcDns}`;
      if (!mesh.includes(want)) fail(where, `-mesh-with lacks ${want} (name/dialaddr through the headless Service)`);
    });
    out.push(JSON.stringify({ pod, args }));
  }
}

if (problems.length) {
  for (const p of problems) console.error(`k8s: ${p}`);
  console.error(`k8s: ${problems.length} problem(s) in ${objects.length} objects`);
  process.exit(1);
}
for (const l of out) console.log(l);
console.error(`k8s: ${objects.length} objects valid (schemas, fields, references)`);
