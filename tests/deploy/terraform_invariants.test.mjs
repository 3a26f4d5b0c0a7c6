// Invariants of deploy/terraform that a schema check cannot see: what makes the deployment
// correct and safe for egressd. Runs on the HCL parsed by @cdktf/hcl2json (no AWS access, no
// provider binary). The last tests evaluate the module's own variable validations and subnet
// layout with the terraform binary when one is installed (a configuration without providers
// needs no registry), and are skipped otherwise.
//
//   node --test terraform_invariants.test.mjs

import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { loadConfig, evaluator, references, strings } from "./lib/hcl.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const tfRoot = path.resolve(process.env.EGRESSD_TF_ROOT || path.join(here, "../../deploy/terraform"));
const moduleDir = path.join(tfRoot, "modules/egressd");
const exampleDir = path.join(tfRoot, "examples/nlb-fargate");

const mod = await loadConfig(moduleDir);
const example = await loadConfig(exampleDir);
const ev = evaluator(mod);

// Facts egressd fixes (README: drain timeline, admin listener, PROXY protocol).
const EGRESSD = {
  adminPort: 9090,
  proxyPort: 3128,
  readyPath: "/readyz",
  probe: ["CMD", "/usr/local/bin/egressd", "probe"],
  drainDelay: 5,
  drainTimeout: 90,
  tunnelIdle: 300,
  fargateMaxStopTimeout: 120,
  natIdleTimeout: 350,
};

const resources = (cfg, type) => cfg.blocks.filter((b) => b.kind === "resource" && b.type === type);
const one = (cfg, type) => {
  const list = resources(cfg, type);
  assert.equal(list.length, 1, `expected exactly one ${type}, found ${list.length}`);
  return list[0];
};
const byName = (cfg, kind, name) => cfg.blocks.find((b) => b.kind === kind && b.name === name);
const localValue = (name) => byName(mod, "local", name)?.body;
const variable = (name) => byName(mod, "variable", name);
const refTexts = (value) => [...strings(value)].flatMap(([s]) => references(s).map((r) => r.text));
const at = (b) => `${b.file}:${b.line} ${b.type}.${b.name}`;

test("parsing: both configurations parse without errors", () => {
  assert.deepEqual(mod.errors, []);
  assert.deepEqual(example.errors, []);
});

test("target group: PROXY protocol v2 on, target type ip, TCP, health check GET /readyz on the admin port", () => {
  const tg = one(mod, "aws_lb_target_group");
  assert.equal(tg.body.proxy_protocol_v2, true, `${at(tg)}: proxy_protocol_v2 must be the literal true (egressd's listener requires the PROXY header)`);
  assert.equal(tg.body.target_type, "ip", `${at(tg)}: target_type must be "ip" (Fargate awsvpc tasks)`);
  assert.equal(tg.body.protocol, "TCP", `${at(tg)}: protocol must be TCP`);
  assert.equal(ev(tg.body.port), EGRESSD.proxyPort, `${at(tg)}: port must default to egressd's proxy port`);
  const hc = tg.body.health_check?.[0];
  assert.ok(hc, `${at(tg)}: no health_check block`);
  assert.notEqual(hc.enabled, false, `${at(tg)}: health check disabled`);
  assert.equal(hc.protocol, "HTTP", `${at(tg)}: health check must be HTTP`);
  assert.equal(hc.path, EGRESSD.readyPath, `${at(tg)}: health check path must be ${EGRESSD.readyPath}`);
  assert.equal(String(ev(hc.port)), String(EGRESSD.adminPort), `${at(tg)}: health check port must default to the admin port ${EGRESSD.adminPort}`);
  assert.equal(String(ev(hc.matcher)), "200", `${at(tg)}: only 200 means ready`);
});

test("target group: deregistration delay aligned with the drain, connection termination on", () => {
  const tg = one(mod, "aws_lb_target_group");
  assert.equal(tg.body.connection_termination, true, `${at(tg)}: connection_termination must be true`);
  assert.equal(Number(ev(tg.body.deregistration_delay)), EGRESSD.drainTimeout, `${at(tg)}: deregistration_delay must default to drain.timeout (${EGRESSD.drainTimeout} s)`);
  assert.equal(String(ev(tg.body.preserve_client_ip)), "false", `${at(tg)}: client IP preservation must be off (the client address comes in the PROXY header)`);
});

test("NLB: network type, cross-zone on, TCP listener forwarding to the target group, idle timeout above tunnel_idle", () => {
  const lb = one(mod, "aws_lb");
  const tg = one(mod, "aws_lb_target_group");
  assert.equal(lb.body.load_balancer_type, "network");
  assert.equal(lb.body.enable_cross_zone_load_balancing, true, `${at(lb)}: cross-zone load balancing must be on`);
  assert.ok(lb.body.security_groups, `${at(lb)}: the NLB needs a security group (only settable at creation)`);
  const listeners = resources(mod, "aws_lb_listener");
  assert.ok(listeners.length >= 1);
  for (const l of listeners) {
    assert.equal(l.body.protocol, "TCP", `${at(l)}: listener protocol must be TCP (egressd speaks PROXY v2 + HTTP itself)`);
    assert.equal(l.body.default_action?.[0]?.type, "forward");
    assert.equal(l.body.default_action?.[0]?.target_group_arn, `\${aws_lb_target_group.${tg.name}.arn}`);
    assert.ok(ev(l.body.tcp_idle_timeout_seconds) > EGRESSD.tunnelIdle, `${at(l)}: the NLB idle timeout must exceed egressd's tunnel_idle`);
  }
  assert.equal(ev("${var.listener_port}"), EGRESSD.proxyPort);
});

test("egress: one Elastic IP and one NAT gateway per zone, each private zone routed to its own", () => {
  const eip = one(mod, "aws_eip");
  const nat = one(mod, "aws_nat_gateway");
  const publicSubnet = nat.body.subnet_id.match(/^\$\{aws_subnet\.(\w+)\[count\.index\]\.id\}$/);
  assert.ok(publicSubnet, `${at(nat)}: subnet_id must be aws_subnet.<public>[count.index].id`);
  const perAz = "${local.az_count}";
  assert.equal(eip.body.count, perAz, `${at(eip)}: one Elastic IP per zone (count = local.az_count)`);
  assert.equal(eip.body.domain, "vpc");
  assert.equal(nat.body.count, perAz, `${at(nat)}: one NAT gateway per zone`);
  assert.equal(nat.body.allocation_id, `\${aws_eip.${eip.name}[count.index].id}`, `${at(nat)}: each NAT gateway takes the Elastic IP of its zone`);
  assert.equal(nat.body.connectivity_type ?? "public", "public");
  assert.equal(resources(mod, "aws_subnet").find((x) => x.name === publicSubnet[1])?.body.count, perAz, "one public subnet per zone");
  const natRoutes = resources(mod, "aws_route").filter((r) => r.body.nat_gateway_id);
  assert.equal(natRoutes.length, 1);
  assert.equal(natRoutes[0].body.count, perAz);
  assert.equal(natRoutes[0].body.nat_gateway_id, `\${aws_nat_gateway.${nat.name}[count.index].id}`, "each private route table uses the NAT gateway of its own zone");
  assert.match(natRoutes[0].body.route_table_id, /\[count\.index\]\.id\}$/);
  assert.match(localValue("az_count"), /var\.azs/);
  const out = byName(mod, "output", "egress_ips");
  assert.equal(out?.body.value, `\${aws_eip.${eip.name}[*].public_ip}`, "output egress_ips must list every NAT Elastic IP");
});

test("ingress: only from the allowed-source variables or the NLB's security group, never 0.0.0.0/0", () => {
  const allowedVars = new Set(["allowed_source_cidrs", "metrics_source_cidrs"]);
  assert.equal(resources(mod, "aws_security_group_rule").length, 0, "use aws_vpc_security_group_*_rule resources, not aws_security_group_rule");
  for (const sg of resources(mod, "aws_security_group"))
    assert.ok(!("ingress" in sg.body) && !sg.body.dynamic?.ingress, `${at(sg)}: no inline ingress rules`);
  const rules = resources(mod, "aws_vpc_security_group_ingress_rule");
  assert.ok(rules.length > 0);
  for (const r of rules) {
    assert.ok(!r.body.cidr_ipv6 && !r.body.prefix_list_id, `${at(r)}: no IPv6 or prefix-list ingress`);
    for (const [s] of strings(r.body)) assert.ok(!/(^|[^0-9])0\.0\.0\.0\/0|::\/0/.test(s), `${at(r)}: ingress from ${s}`);
    if (r.body.referenced_security_group_id) {
      assert.match(r.body.referenced_security_group_id, /^\$\{aws_security_group\.\w+\.id\}$/, `${at(r)}: must reference a security group of this module`);
      assert.ok(!r.body.cidr_ipv4, `${at(r)}: either a security group or a CIDR`);
      continue;
    }
    const fe = /^\$\{toset\(var\.(\w+)\)\}$/.exec(r.body.for_each || "");
    assert.ok(fe && allowedVars.has(fe[1]), `${at(r)}: CIDR ingress must be for_each = toset(var.allowed_source_cidrs | var.metrics_source_cidrs), got ${r.body.for_each}`);
    assert.equal(r.body.cidr_ipv4, "${each.value}", `${at(r)}: cidr_ipv4 must be each.value`);
  }
  const nlbSg = one(mod, "aws_lb").body.security_groups;
  const nlbSgName = /aws_security_group\.(\w+)\.id/.exec(nlbSg)[1];
  const clientRules = rules.filter((r) => r.body.security_group_id === `\${aws_security_group.${nlbSgName}.id}`);
  assert.ok(clientRules.length > 0, "the NLB's security group admits the clients");
  for (const r of clientRules) {
    assert.equal(r.body.for_each, "${toset(var.allowed_source_cidrs)}", `${at(r)}: the NLB admits allowed_source_cidrs only`);
    assert.equal(r.body.from_port, "${var.listener_port}");
    assert.equal(r.body.to_port, "${var.listener_port}");
  }
});

test("allowed_source_cidrs: required (no default) and validated", () => {
  const v = variable("allowed_source_cidrs");
  assert.ok(v, "variable allowed_source_cidrs missing");
  assert.ok(!("default" in v.body), "allowed_source_cidrs must have no default");
  assert.ok((v.body.validation || []).length >= 2, "allowed_source_cidrs needs validations (non-empty, no /0)");
  const exampleVar = byName(example, "variable", "allowed_source_cidrs");
  assert.ok(exampleVar && !("default" in exampleVar.body), "the example root must require allowed_source_cidrs too");
  assert.equal(byName(example, "module", "egressd").body.allowed_source_cidrs, "${var.allowed_source_cidrs}");
  const envSources = localValue("container_base_environment")?.EGRESSD_ALLOW_SOURCES;
  assert.equal(envSources, '${join(",", var.allowed_source_cidrs)}', "egressd's own source gate gets the same ranges");
});

// Rule numbers: a literal or "N + count.index" (then the rule covers N .. N + count - 1).
function aclRules(aclName) {
  return resources(mod, "aws_network_acl_rule")
    .filter((r) => r.body.network_acl_id === `\${aws_network_acl.${aclName}.id}`)
    .map((r) => {
      const n = ev(r.body.rule_number);
      const num = typeof n === "number" ? n : n?.countBase;
      assert.ok(Number.isInteger(num), `${at(r)}: rule_number must be a literal or N + count.index`);
      const proto = String(r.body.protocol);
      const all = proto === "-1" || proto === "all";
      const from = all ? 0 : ev(r.body.from_port);
      const to = all ? 65535 : ev(r.body.to_port);
      return { r, num, egress: r.body.egress === true, action: r.body.rule_action, cidr: r.body.cidr_block, proto, from, to };
    })
    .sort((a, b) => a.num - b.num);
}

test("network ACLs: the NLB's subnets admit the listener port only from allowed_source_cidrs, 0.0.0.0/0 denied first", () => {
  const lb = one(mod, "aws_lb");
  const lbSubnet = /^\$\{aws_subnet\.(\w+)\[\*\]\.id\}$/.exec(lb.body.subnets)?.[1];
  assert.ok(lbSubnet, `${at(lb)}: subnets must be aws_subnet.<name>[*].id`);
  const natSubnet = /aws_subnet\.(\w+)\[/.exec(one(mod, "aws_nat_gateway").body.subnet_id)[1];
  assert.notEqual(lbSubnet, natSubnet, "the NLB must not share the NAT gateways' subnets (their ACL admits TCP 1024-65535, the proxy port included, from anywhere)");
  const acls = resources(mod, "aws_network_acl").filter((a) => a.body.subnet_ids === `\${aws_subnet.${lbSubnet}[*].id}`);
  assert.equal(acls.length, 1, "the NLB's subnets need their own network ACL");
  const port = ev("${var.listener_port}");
  const inbound = aclRules(acls[0].name).filter((x) => !x.egress);
  const covers = (x) => (x.proto === "tcp" || x.proto === "6" || x.proto === "-1" || x.proto === "all") && ev(x.from) <= port && port <= ev(x.to);
  const denyAll = inbound.find((x) => x.action === "deny" && x.cidr === "0.0.0.0/0" && covers(x));
  assert.ok(denyAll, "an explicit deny of the listener port from 0.0.0.0/0 is missing");
  let clientRules = 0;
  for (const x of inbound.filter((y) => y.action === "allow" && covers(y))) {
    if (x.cidr === "${var.vpc_cidr}") continue; // the VPC itself (answers from the tasks)
    if (x.cidr === "0.0.0.0/0") {
      assert.ok(x.num > denyAll.num, `${at(x.r)}: allows the listener port from 0.0.0.0/0 at ${x.num}, before the deny at ${denyAll.num}`);
      continue;
    }
    const fromClients = x.cidr === "${var.allowed_source_cidrs[count.index]}" && x.r.body.count === "${length(var.allowed_source_cidrs)}";
    assert.ok(fromClients, `${at(x.r)}: admits the listener port from ${x.cidr}; only allowed_source_cidrs may`);
    // N + count.index with up to 38 entries (the highest ACL quota) must stay below the deny.
    assert.ok(x.num + 38 < denyAll.num, `${at(x.r)}: client allows (${x.num}..${x.num + 38}) must be numbered before the deny (${denyAll.num})`);
    clientRules++;
  }
  assert.equal(clientRules, 1, "exactly one rule (with count) admits the clients");
});

test("network ACLs: the NAT subnets admit the return traffic of NAT'd connections", () => {
  const natSubnet = /aws_subnet\.(\w+)\[/.exec(one(mod, "aws_nat_gateway").body.subnet_id)[1];
  const acl = resources(mod, "aws_network_acl").find((a) => a.body.subnet_ids === `\${aws_subnet.${natSubnet}[*].id}`);
  assert.ok(acl, "the NAT subnets need a network ACL");
  const rules = aclRules(acl.name);
  const inbound = rules.filter((x) => !x.egress);
  const ret = inbound.find((x) => x.action === "allow" && x.cidr === "0.0.0.0/0" && x.proto === "tcp" && x.from <= 1024 && x.to >= 65535);
  assert.ok(ret, "inbound TCP 1024-65535 from 0.0.0.0/0 is needed for NAT return traffic");
  for (const d of inbound.filter((x) => x.action === "deny" && x.num < ret.num))
    assert.ok(!(d.proto === "tcp" && d.from >= 1024 && d.to <= 65535 && d.cidr === "0.0.0.0/0"), `${at(d.r)}: a deny inside 1024-65535 before the NAT return rule drops NAT'd connections that use those ports`);
  assert.ok(inbound.some((x) => x.action === "allow" && x.cidr === "${var.vpc_cidr}"), "the tasks' traffic to the NAT gateways must be admitted");
  assert.ok(rules.some((x) => x.egress && x.action === "allow"), "outbound from the NAT subnets must be allowed");
});

test("task definition: Fargate, health check probe on /readyz, stopTimeout fits the drain, nofile, awslogs, PROXY env", () => {
  const td = one(mod, "aws_ecs_task_definition");
  assert.deepEqual(td.body.requires_compatibilities, ["FARGATE"]);
  assert.equal(td.body.network_mode, "awsvpc");
  assert.equal(td.body.container_definitions, "${jsonencode([local.container_definition])}");
  const c = localValue("container_definition");
  assert.ok(c && typeof c === "object", "local.container_definition must be an HCL object");
  assert.equal(c.essential, true);
  assert.deepEqual(c.healthCheck.command.map((x) => ev(x)), EGRESSD.probe, "container health check command");
  const stop = ev(c.stopTimeout);
  assert.ok(stop <= EGRESSD.fargateMaxStopTimeout, `stopTimeout ${stop} above Fargate's ${EGRESSD.fargateMaxStopTimeout}`);
  assert.ok(stop > EGRESSD.drainDelay + EGRESSD.drainTimeout, `stopTimeout ${stop} must exceed drain delay + timeout (${EGRESSD.drainDelay + EGRESSD.drainTimeout})`);
  assert.equal(ev("${var.drain_delay_seconds}"), EGRESSD.drainDelay);
  assert.equal(ev("${var.drain_timeout_seconds}"), EGRESSD.drainTimeout);
  const nofile = c.ulimits.find((u) => u.name === "nofile");
  assert.ok(nofile && ev(nofile.softLimit) >= 65536 && ev(nofile.hardLimit) >= ev(nofile.softLimit), "nofile ulimit");
  assert.equal(c.logConfiguration.logDriver, "awslogs");
  assert.ok(refTexts(c.logConfiguration).some((r) => r.startsWith("aws_cloudwatch_log_group.")), "awslogs must write to the module's log group");
  const ports = c.portMappings.map((p) => ev(p.containerPort));
  assert.deepEqual(ports.sort(), [EGRESSD.proxyPort, EGRESSD.adminPort].sort());
  const env = localValue("container_base_environment");
  assert.equal(env.EGRESSD_PROXY_PROTOCOL, "required");
  assert.equal(ev(env.EGRESSD_ADMIN_LISTEN), `0.0.0.0:${EGRESSD.adminPort}`, "the NLB health check must reach the admin listener");
  assert.equal(ev(env.EGRESSD_LISTEN), `0.0.0.0:${EGRESSD.proxyPort}`);
  assert.ok(refTexts(env.EGRESSD_TRUSTED_PROXIES).includes("local.trusted_proxy_cidrs"));
  assert.match(localValue("container_environment"), /merge\(var\.extra_environment, local\.container_base_environment\)/, "the base environment must win over extra_environment");
  const keepalive = c.systemControls.find((s) => s.namespace === "net.ipv4.tcp_keepalive_time");
  assert.ok(keepalive && Number(ev(keepalive.value)) < EGRESSD.natIdleTimeout, "keepalive time must be below the NAT gateway's 350 s idle timeout");
});

test("service: Fargate in the private subnets, no public IP, behind the target group, count owned by autoscaling", () => {
  const svc = one(mod, "aws_ecs_service");
  const tg = one(mod, "aws_lb_target_group");
  assert.equal(svc.body.launch_type, "FARGATE");
  const net = svc.body.network_configuration[0];
  assert.equal(net.assign_public_ip, false);
  assert.match(net.subnets, /^\$\{aws_subnet\.private\[\*\]\.id\}$/);
  const lbb = svc.body.load_balancer[0];
  assert.equal(lbb.target_group_arn, `\${aws_lb_target_group.${tg.name}.arn}`);
  assert.equal(lbb.container_port, "${var.proxy_port}");
  assert.ok(svc.body.lifecycle[0].ignore_changes.includes("${desired_count}"), "desired_count must be ignored (autoscaling owns it)");
  assert.equal(svc.body.deployment_minimum_healthy_percent, 100);
});

test("autoscaling: target tracking on CPU and on memory", () => {
  const target = one(mod, "aws_appautoscaling_target");
  assert.equal(target.body.scalable_dimension, "ecs:service:DesiredCount");
  assert.match(target.body.resource_id, /aws_ecs_service\.\w+\.name/);
  const metrics = resources(mod, "aws_appautoscaling_policy").map((p) => {
    assert.equal(p.body.policy_type, "TargetTrackingScaling");
    return p.body.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type;
  });
  assert.deepEqual(metrics.sort(), ["ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization"]);
});

test("alarms: healthy hosts below minimum, NAT port allocation errors and egress bytes per NAT gateway", () => {
  const alarms = resources(mod, "aws_cloudwatch_metric_alarm");
  const find = (ns, metric) => alarms.find((a) => a.body.namespace === ns && a.body.metric_name === metric);
  const hh = find("AWS/NetworkELB", "HealthyHostCount");
  assert.ok(hh, "HealthyHostCount alarm missing");
  assert.equal(hh.body.threshold, "${var.min_count}");
  assert.equal(hh.body.comparison_operator, "LessThanThreshold");
  assert.match(hh.body.dimensions.TargetGroup, /aws_lb_target_group\.\w+\.arn_suffix/);
  assert.match(hh.body.dimensions.LoadBalancer, /aws_lb\.\w+\.arn_suffix/);
  for (const metric of ["ErrorPortAllocation", "BytesOutToDestination"]) {
    const a = find("AWS/NATGateway", metric);
    assert.ok(a, `${metric} alarm missing`);
    assert.equal(a.body.count, "${local.az_count}", `${metric}: one alarm per NAT gateway`);
    assert.match(a.body.dimensions.NatGatewayId, /aws_nat_gateway\.\w+\[count\.index\]\.id/);
  }
  for (const a of alarms) assert.equal(a.body.alarm_actions, "${var.alarm_actions}", `${at(a)}: must notify alarm_actions`);
});

test("outputs: the egress IPs and the proxy endpoint, in the module and the example root", () => {
  const need = ["egress_ips", "egress_ips_by_az", "proxy_endpoint", "proxy_url", "nlb_dns_name", "nat_gateway_ids", "vpc_id", "log_group_name", "alarm_names"];
  for (const n of need) assert.ok(byName(mod, "output", n), `module output ${n} missing`);
  for (const n of ["egress_ips", "proxy_url", "proxy_endpoint"]) {
    const o = byName(example, "output", n);
    assert.ok(o, `example output ${n} missing`);
    assert.equal(o.body.value, `\${module.egressd.${n}}`);
  }
});

test("README documents every variable and output of the module and the example", () => {
  const readme = fs.readFileSync(path.join(tfRoot, "README.md"), "utf8");
  const missing = [];
  for (const [label, cfg] of [["module", mod], ["example", example]])
    for (const b of cfg.blocks.filter((x) => x.kind === "variable" || x.kind === "output"))
      if (!new RegExp("^\\|\\s*`" + b.name + "`\\s*\\|", "m").test(readme)) missing.push(`${label} ${b.kind} ${b.name}`);
  assert.deepEqual(missing, [], "deploy/terraform/README.md has no table row for these");
  for (const b of mod.blocks.filter((x) => x.kind === "variable")) {
    if (!("default" in b.body)) assert.match(readme, new RegExp("^\\|\\s*`" + b.name + "`\\s*\\|[^\\n]*\\brequired\\b", "m"), `README must mark ${b.name} as required`);
  }
});

// ---- with the terraform binary: the module's own validations and subnet layout, evaluated -------

const terraform = ["/usr/local/bin/terraform", ...(process.env.PATH || "").split(":").map((d) => path.join(d, "terraform"))].find((p) => {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
});
const tfEnv = { ...process.env, TF_IN_AUTOMATION: "1", CHECKPOINT_DISABLE: "1" };
if (tfEnv.TF_CLI_CONFIG_FILE && !fs.existsSync(tfEnv.TF_CLI_CONFIG_FILE)) delete tfEnv.TF_CLI_CONFIG_FILE;

// A configuration with the module's variables.tf and the subnet locals copied verbatim from
// main.tf: no provider, so `terraform init` needs no registry.
function scratchConfig() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "egressd-tf-"));
  fs.copyFileSync(path.join(moduleDir, "variables.tf"), path.join(dir, "variables.tf"));
  const strip = (v) => v.replace(/^\$\{/, "").replace(/\}$/, "");
  const locals = ["az_count", "private_subnet_cidrs", "public_subnet_cidrs", "lb_subnet_cidrs"].map((n) => `  ${n} = ${strip(localValue(n))}`);
  fs.writeFileSync(path.join(dir, "layout.tf"), `locals {\n${locals.join("\n")}\n}\n`);
  execFileSync(terraform, ["init", "-backend=false", "-input=false", "-no-color"], { cwd: dir, env: tfEnv, stdio: "pipe" });
  return dir;
}

function tfVars(vars) {
  return Object.entries(vars).flatMap(([k, v]) => ["-var", `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`]);
}

test("terraform evaluates the variable validations: open or malformed source ranges and bad timeouts are refused", { skip: !terraform && "no terraform binary" }, () => {
  const dir = scratchConfig();
  try {
    const base = { image: "egressd:test", allowed_source_cidrs: ["198.51.100.0/24", "203.0.113.0/24"] };
    const plan = (vars) => spawnSync(terraform, ["plan", "-input=false", "-no-color", "-lock=false", ...tfVars(vars)], { cwd: dir, env: tfEnv, encoding: "utf8" });
    const ok = plan(base);
    assert.equal(ok.status, 0, `a valid configuration is refused:\n${ok.stdout}${ok.stderr}`);
    const refused = [
      [{ allowed_source_cidrs: ["0.0.0.0/0"] }, "open proxy"],
      [{ allowed_source_cidrs: ["198.51.100.0/24", "0.0.0.0/0"] }, "open proxy"],
      [{ allowed_source_cidrs: ["10.0.0.0/4"] }, "open proxy"],
      [{ allowed_source_cidrs: ["198.51.100.7/24"] }, "network address"],
      [{ allowed_source_cidrs: ["office"] }, "allowed_source_cidrs"],
      [{ allowed_source_cidrs: [] }, "must not be empty"],
      [{ metrics_source_cidrs: ["0.0.0.0/0"] }, "metrics_source_cidrs"],
      [{ trusted_proxy_cidrs: ["0.0.0.0/0"] }, "trusted_proxy_cidrs"],
      [{ stop_timeout: 121 }, "120"],
      [{ az_count: 0 }, "az_count"],
      [{ az_count: 7 }, "az_count"],
      [{ tcp_keepalive_time_seconds: 350 }, "350"],
      [{ nlb_tcp_idle_timeout_seconds: 30 }, "nlb_tcp_idle_timeout_seconds"],
      [{ vpc_cidr: "10.0.0.0/8" }, "vpc_cidr"],
      [{ cpu: 300 }, "cpu"],
    ];
    for (const [override, text] of refused) {
      const r = plan({ ...base, ...override });
      assert.notEqual(r.status, 0, `accepted ${JSON.stringify(override)}`);
      assert.ok((r.stdout + r.stderr).includes(text), `${JSON.stringify(override)} refused without mentioning "${text}":\n${r.stderr}`);
    }
    const missing = spawnSync(terraform, ["plan", "-input=false", "-no-color", "-lock=false", ...tfVars({ image: "x" })], { cwd: dir, env: tfEnv, encoding: "utf8" });
    assert.notEqual(missing.status, 0, "allowed_source_cidrs must be required");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function parseCidr(c) {
  const [ip, len] = c.split("/");
  const n = ip.split(".").reduce((a, o) => a * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(len));
  return { start: n, end: n + size - 1, size };
}

test("terraform evaluates the default subnet layout: inside the VPC, no overlaps, big enough, for 1-6 zones", { skip: !terraform && "no terraform binary" }, () => {
  const dir = scratchConfig();
  try {
    for (const vpc of ["10.42.0.0/16", "10.42.0.0/20"]) {
      for (let n = 1; n <= 6; n++) {
        const out = execFileSync(terraform, ["console", "-no-color", ...tfVars({ image: "x", allowed_source_cidrs: ["198.51.100.0/24"], vpc_cidr: vpc, az_count: n })], {
          cwd: dir,
          env: tfEnv,
          input: "jsonencode([local.private_subnet_cidrs, local.public_subnet_cidrs, local.lb_subnet_cidrs])\n",
          encoding: "utf8",
        });
        const [priv, pub, lbs] = JSON.parse(JSON.parse(out.trim()));
        const v = parseCidr(vpc);
        const all = [...priv, ...pub, ...lbs].map((c) => ({ c, ...parseCidr(c) }));
        assert.equal(priv.length, n);
        assert.equal(pub.length, n);
        assert.equal(lbs.length, n);
        for (const s of all) {
          assert.ok(s.start >= v.start && s.end <= v.end, `${s.c} outside ${vpc}`);
          assert.ok(s.size >= 16, `${s.c} smaller than /28 (AWS minimum; the NLB needs 8 free addresses)`);
        }
        all.sort((a, b) => a.start - b.start);
        for (let i = 1; i < all.length; i++) assert.ok(all[i].start > all[i - 1].end, `${all[i - 1].c} overlaps ${all[i].c} (vpc ${vpc}, ${n} zones)`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
