#!/usr/bin/env python3
"""Checks egressd's Grafana dashboard and Prometheus alert rules (Python 3 stdlib + promtool).

Run by tests/monitoring/check_monitoring.sh, which starts egressd and scrapes /metrics first.

  check_monitoring.py --metrics SCRAPE --dashboard JSON --alerts YAML --tests YAML --workdir DIR

What fails (exit 1), each problem printed on its own line:
  dashboard   not JSON; a missing or wrong top-level field, template variable, panel field or
              datasource; a panel type other than row/timeseries/stat/gauge; duplicate ids,
              refIds or titles; panels off the 24-column grid or overlapping; a requested topic
              (requests and tunnels by outcome, denials by reason, ...) with no panel; a selector
              without job=~"$job" and instance=~"$instance"; an undefined Grafana variable
  PromQL      every panel and variable-query expression, with Grafana variables substituted, is
              written as a recording rule and parsed by `promtool check rules`; alert
              expressions are parsed by promtool through the alert file itself
  names       every metric name in any expression must be one the live egressd exported (its
              series names, so histogram _bucket/_sum/_count included; plus Prometheus' `up`);
              every label matcher and by/without/on/ignoring label must exist on the metrics of
              the expression, and every literal label value (=, !=, and each alternative of a
              =~/!~ alternation) must be one egressd exported (config-dependent labels listener
              and rule excepted)
  alerts      `promtool check rules --lint-fatal` (rule count cross-checked with this parser);
              every alert has severity, summary and a one-line runbook annotation; the requested
              alerts (instance down, error ratio, denials spike, upstream connect failures, fds
              near the limit, DNS failures, drain stuck, config reload failed) exist
  alert tests `promtool test rules`; every alert has a case where it fires and one where it
              must not
Exit status: 0 clean, 1 problems found, 2 usage or an unreadable input.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

PROG = "check_monitoring"

# Labels Prometheus attaches at scrape time (target labels), valid on every series.
TARGET_LABELS = {"job", "instance"}
# Series Prometheus synthesises per target; nothing else outside the scrape is accepted.
SYNTHETIC_SERIES = {"up": set()}
# Labels whose values come from the configuration, not from a fixed set.
CONFIG_DEPENDENT_LABELS = {"listener", "rule"}

PANEL_TYPES = {"row", "timeseries", "stat", "gauge"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's built-in variables, replaced by a representative value before promtool parses them.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "__interval_ms": "60000", "__range_s": "3600", "__range_ms": "3600000",
}

# Topics the issue asks the dashboard to show: a panel must cover each (all of its targets
# together): metrics used, labels grouped by, label matchers, functions applied.
@dataclass
class Topic:
    name: str
    metrics: set
    by: set = field(default_factory=set)
    matchers: set = field(default_factory=set)       # (label, value) that a matcher must select
    funcs: set = field(default_factory=set)
    min_quantiles: int = 0                            # distinct histogram_quantile targets


DASHBOARD_TOPICS = [
    Topic("requests per second by outcome", {"egressd_requests_total"}, {"outcome"},
          {("kind", "http")}, {"rate"}),
    Topic("tunnels per second by outcome", {"egressd_requests_total"}, {"outcome"},
          {("kind", "connect")}, {"rate"}),
    Topic("denials by reason", {"egressd_denials_total"}, {"reason"}, funcs={"rate"}),
    Topic("active connections", {"egressd_connections_active"}),
    Topic("bytes per second each way", {"egressd_bytes_total"}, {"direction"}, funcs={"rate"}),
    Topic("upstream connect latency percentiles",
          {"egressd_upstream_connect_duration_seconds_bucket"}, {"le"},
          funcs={"histogram_quantile"}, min_quantiles=2),
    Topic("DNS latency percentiles", {"egressd_dns_duration_seconds_bucket"}, {"le"},
          funcs={"histogram_quantile"}, min_quantiles=2),
    Topic("tunnel durations", {"egressd_tunnel_duration_seconds_bucket"}, {"le"},
          funcs={"histogram_quantile"}, min_quantiles=2),
    Topic("upstream error rate by kind", {"egressd_upstream_errors_total"}, {"kind"},
          funcs={"rate"}),
    Topic("timeout rate by phase", {"egressd_timeouts_total"}, {"phase"}, funcs={"rate"}),
    Topic("error ratio", {"egressd_requests_total"},
          matchers={("outcome", "upstream_error"), ("outcome", "timeout"),
                    ("outcome", "internal_error")}),
    Topic("fds used versus limit", {"process_open_fds", "process_max_fds"}),
    Topic("splice versus copy share", {"egressd_relays_total"}, {"mode"}, funcs={"rate"}),
    Topic("drain state", {"egressd_draining"}),
]

# Requested panels egressd has no metric for: (topic, pattern of the metric that would serve it).
# While no such metric is exported this is reported as a note; once egressd exports one, a panel
# must use it.
MISSING_METRIC_TOPICS = [
    ("active tunnels", re.compile(r"^egressd_(tunnels?_(active|open|current)|active_tunnels)$")),
]

ALERT_TOPICS = [
    Topic("instance down", {"up"}),
    Topic("error ratio high", {"egressd_requests_total"}, matchers={("outcome", "upstream_error")}),
    Topic("denials spike", {"egressd_denials_total"}),
    Topic("upstream connect failures", {"egressd_upstream_errors_total"},
          matchers={("kind", "refused")}),
    Topic("fds near the limit", {"process_open_fds", "process_max_fds"}),
    Topic("DNS failures", {"egressd_upstream_errors_total"}, matchers={("kind", "dns")}),
    Topic("drain stuck", {"egressd_draining"}),
    Topic("config reload failed", {"egressd_config_last_reload_successful"}),
]
SEVERITIES = {"critical", "warning", "info"}

problems: list[str] = []
notes: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)


# --------------------------------------------------------------------------------------------
# Prometheus text exposition


@dataclass
class Exposition:
    labels: dict   # series name -> {label -> set of values}
    types: dict    # family -> type


def parse_exposition(text: str) -> Exposition:
    labels: dict = {}
    types: dict = {}
    label_re = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            raise ValueError(f"unparsable exposition line: {line!r}")
        series = labels.setdefault(m.group(1), {})
        for name, value in label_re.findall(m.group(3) or ""):
            series.setdefault(name, set()).add(value)
    # A histogram or summary family exports these series even when the scrape held none yet.
    for family, kind in types.items():
        suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
        for suffix in suffixes.get(kind, ()):
            labels.setdefault(family + suffix, {})
        if kind == "histogram":
            labels[family + "_bucket"].setdefault("le", set())
    return Exposition(labels, types)


# --------------------------------------------------------------------------------------------
# PromQL: a tokenizer and a walk that finds selectors, groupings and functions. Syntax errors
# are promtool's job; this only has to find names reliably in expressions promtool accepts.

TOKEN_RE = re.compile(r"""
  (?P<ws>\s+|\#[^\n]*)
| (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
| (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\])
| (?P<dur>(?:[0-9]+(?:ms|[smhdwy]))+(?![A-Za-z0-9_.]))
| (?P<num>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
| (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
| (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
""", re.X)

GROUPING_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OTHER_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


@dataclass
class Matcher:
    label: str
    op: str
    value: str
    variable: bool   # the value contains a Grafana variable


@dataclass
class Selector:
    name: str | None
    matchers: list


@dataclass
class Analysis:
    selectors: list = field(default_factory=list)
    groupings: list = field(default_factory=list)   # (keyword, [labels])
    funcs: list = field(default_factory=list)
    variables: list = field(default_factory=list)   # Grafana variables outside strings


def unquote(tok: str) -> str:
    if tok[0] == "`":
        return tok[1:-1]
    body = tok[1:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
               "b": "\b", "f": "\f", "v": "\v"}
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def tokenize(expr: str) -> list:
    toks, pos = [], 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize at offset {pos}: {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            toks.append((m.lastgroup, m.group()))
    return toks


VAR_IN_STRING_RE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]")


def analyse(expr: str) -> Analysis:
    toks = tokenize(expr)
    a = Analysis()
    n, i = len(toks), 0

    def matchers_at(j):  # toks[j] is "{": returns (matchers, index after "}")
        ms, j = [], j + 1
        while j < n and toks[j][1] != "}":
            if toks[j][1] == ",":
                j += 1
                continue
            if (j + 2 >= n or toks[j][0] not in ("ident", "str")
                    or toks[j + 1][1] not in ("=", "!=", "=~", "!~") or toks[j + 2][0] != "str"):
                raise ValueError(f"unexpected label matcher near {toks[j][1]!r}")
            label = toks[j][1] if toks[j][0] == "ident" else unquote(toks[j][1])
            raw = toks[j + 2][1]
            ms.append(Matcher(label, toks[j + 1][1], unquote(raw),
                              bool(VAR_IN_STRING_RE.search(raw))))
            j += 3
        if j >= n:
            raise ValueError("unterminated label matcher list")
        return ms, j + 1

    while i < n:
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < n else None
        if kind == "ident":
            low = text.lower()
            if low in GROUPING_KEYWORDS:
                if nxt == "(":
                    j, labels = i + 2, []
                    while j < n and toks[j][1] != ")":
                        if toks[j][0] == "ident":
                            labels.append(toks[j][1])
                        j += 1
                    a.groupings.append((low, labels))
                    i = j + 1
                else:
                    i += 1
                continue
            if low in OTHER_KEYWORDS:
                i += 1
                continue
            if nxt == "(" or (low in AGGREGATORS and i + 1 < n
                              and toks[i + 1][1].lower() in ("by", "without")):
                a.funcs.append(low if low in AGGREGATORS else text)
                i += 1
                continue
            if nxt == "{":
                ms, i = matchers_at(i + 1)
            else:
                ms, i = [], i + 1
            a.selectors.append(Selector(text, ms))
            continue
        if text == "{":
            ms, i = matchers_at(i)
            names = [m.value for m in ms if m.label == "__name__" and m.op == "="]
            a.selectors.append(Selector(names[0] if names else None,
                                        [m for m in ms if m.label != "__name__"]))
            continue
        if text == "[":  # a range or subquery: durations, maybe a Grafana interval variable
            depth, j = 0, i
            while j < n:
                if toks[j][1] == "[":
                    depth += 1
                elif toks[j][1] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                elif toks[j][0] == "var":
                    a.variables.append(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "var":
            a.variables.append(text)
        i += 1
    return a


def var_name(ref: str) -> str:
    """'$x', '${x}', '${x:regex}', '[[x]]' -> 'x'"""
    if ref.startswith("[["):
        return ref[2:-2].split(":")[0]
    if ref.startswith("${"):
        return ref[2:-1].split(":")[0]
    return ref[1:]


def substitute(expr: str, variables: set, where: str) -> str:
    """Grafana variables -> values promtool can parse: built-in intervals become durations,
    template variables (only valid inside label matcher strings) become '.*'."""
    out, pos = [], 0
    for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`|'
                         r'\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]', expr):
        out.append(expr[pos:m.start()])
        tok = m.group()
        if tok[0] in "\"'`":
            def in_string(v):
                name = var_name(v.group())
                if name in variables:
                    return ".*"
                if name in GRAFANA_BUILTINS:
                    return GRAFANA_BUILTINS[name]
                fail(f"{where}: undefined Grafana variable {v.group()}")
                return ".*"
            out.append(VAR_IN_STRING_RE.sub(in_string, tok))
        else:
            name = var_name(tok)
            if name in GRAFANA_BUILTINS:
                out.append(GRAFANA_BUILTINS[name])
            elif name in variables:
                fail(f"{where}: template variable {tok} outside a label matcher string")
                out.append("0")
            else:
                fail(f"{where}: undefined Grafana variable {tok}")
                out.append("0")
        pos = m.end()
    out.append(expr[pos:])
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Names and labels against the live scrape


def known_labels(expo: Exposition, name: str) -> dict | None:
    if name in expo.labels:
        return expo.labels[name]
    if name in SYNTHETIC_SERIES:
        return {}
    return None


def check_names(where: str, a: Analysis, expo: Exposition, extra_names: set = frozenset()) -> None:
    labels_in_expr = set(TARGET_LABELS)
    for sel in a.selectors:
        if sel.name is None:
            fail(f"{where}: selector without a metric name ({{...}} alone cannot be checked)")
            continue
        if sel.name in extra_names:
            labels_in_expr |= {m.label for m in sel.matchers}
            continue
        lab = known_labels(expo, sel.name)
        if lab is None:
            fail(f"{where}: unknown metric {sel.name} (egressd does not export it)")
            continue
        labels_in_expr |= set(lab)
        for m in sel.matchers:
            if m.label in TARGET_LABELS:
                continue
            if m.label not in lab:
                fail(f"{where}: {sel.name} has no label {m.label!r} "
                     f"(its labels: {', '.join(sorted(lab)) or 'none'})")
                continue
            if m.variable or m.label in CONFIG_DEPENDENT_LABELS or m.value == "":
                continue
            values = lab[m.label]
            if m.op in ("=", "!="):
                if m.value not in values:
                    fail(f"{where}: {sel.name}{{{m.label}{m.op}{m.value!r}}}: egressd exports "
                         f"no such value (values: {', '.join(sorted(values))})")
            else:
                if re.fullmatch(r"[A-Za-z0-9_.:+-]+(\|[A-Za-z0-9_.:+-]+)*", m.value):
                    for alt in m.value.split("|"):
                        if alt not in values and not any(re.fullmatch(alt, v) for v in values):
                            fail(f"{where}: {sel.name}{{{m.label}{m.op}{m.value!r}}}: "
                                 f"alternative {alt!r} matches no exported value "
                                 f"(values: {', '.join(sorted(values))})")
                else:
                    try:
                        rx = re.compile(m.value)
                    except re.error as e:
                        fail(f"{where}: {sel.name}: bad regex {m.value!r}: {e}")
                        continue
                    if not any(rx.fullmatch(v) for v in values):
                        fail(f"{where}: {sel.name}{{{m.label}{m.op}{m.value!r}}}: "
                             f"matches no exported value")
    for kw, labels in a.groupings:
        for label in labels:
            if label not in labels_in_expr:
                fail(f"{where}: {kw} ({label}): no metric in the expression has that label")


def topic_covered(t: Topic, analyses: list) -> bool:
    names = {s.name for a in analyses for s in a.selectors}
    if not t.metrics <= names:
        return False
    by = {lab for a in analyses for kw, labels in a.groupings if kw in ("by", "on")
          for lab in labels}
    if not t.by <= by:
        return False
    funcs = {f for a in analyses for f in a.funcs}
    if not t.funcs <= funcs:
        return False
    for label, value in t.matchers:
        hit = False
        for a in analyses:
            for s in a.selectors:
                if s.name not in t.metrics:
                    continue
                for m in s.matchers:
                    if m.label != label or m.variable:
                        continue
                    if (m.op == "=" and m.value == value) or \
                       (m.op == "=~" and re.fullmatch(m.value, value)):
                        hit = True
        if not hit:
            return False
    if t.min_quantiles and sum(1 for a in analyses if "histogram_quantile" in a.funcs) \
            < t.min_quantiles:
        return False
    return True


# --------------------------------------------------------------------------------------------
# A YAML subset loader (block mappings and sequences, plain/quoted/block scalars, comments,
# empty [] and {}): enough for Prometheus rule and test files, without a third-party package.
# Anything outside the subset is an error, and the rule count is cross-checked with promtool.


class YamlError(ValueError):
    pass


def load_yaml(text: str):
    lines = text.split("\n")
    pos = [0]

    def significant(i):
        while i < len(lines):
            s = lines[i].strip()
            if s and not s.startswith("#") and s not in ("---", "..."):
                return i
            i += 1
        return None

    def indent(line):
        return len(line) - len(line.lstrip(" "))

    def scalar(rest, lineno):
        rest = rest.strip()
        if rest.startswith('"'):
            m = re.match(r'"((?:[^"\\]|\\.)*)"\s*(#.*)?$', rest)
            if not m:
                raise YamlError(f"line {lineno}: unterminated or trailing text after string")
            return unquote('"' + m.group(1) + '"')
        if rest.startswith("'"):
            m = re.match(r"'((?:[^']|'')*)'\s*(#.*)?$", rest)
            if not m:
                raise YamlError(f"line {lineno}: unterminated or trailing text after string")
            return m.group(1).replace("''", "'")
        rest = re.sub(r"\s+#.*$", "", rest)
        if rest == "[]":
            return []
        if rest == "{}":
            return {}
        if rest[:1] in "[{&*!|>%@`":
            raise YamlError(f"line {lineno}: {rest[:1]!r} is outside the supported YAML subset")
        return rest

    def block_scalar(header, parent_indent, lineno):
        m = re.fullmatch(r"([|>])([+-]?)", header)
        if not m:
            raise YamlError(f"line {lineno}: unsupported block scalar header {header!r}")
        body, i = [], pos[0]
        while i < len(lines) and (not lines[i].strip() or indent(lines[i]) > parent_indent):
            body.append(lines[i])
            i += 1
        pos[0] = i
        while body and not body[-1].strip():
            body.pop()
        if not body:
            return ""
        ind = min(indent(b) for b in body if b.strip())
        body = [b[ind:] if b.strip() else "" for b in body]
        if m.group(1) == "|":
            text = "\n".join(body)
        else:
            text, prev_blank = "", True
            for b in body:
                if not b:
                    text += "\n"
                    prev_blank = True
                else:
                    text += ("" if prev_blank else " ") + b
                    prev_blank = False
        return text if m.group(2) == "-" else text + "\n"

    def node(min_indent):
        i = significant(pos[0])
        if i is None or indent(lines[i]) < min_indent:
            return None
        pos[0] = i
        content = lines[i].strip()
        if content == "-" or content.startswith("- "):
            return sequence(indent(lines[i]))
        return mapping(indent(lines[i]))

    def sequence(ind):
        items = []
        while True:
            i = significant(pos[0])
            if i is None or indent(lines[i]) != ind:
                break
            content = lines[i].strip()
            if not (content == "-" or content.startswith("- ")):
                break
            rest = lines[i][ind + 1:]
            if not rest.strip():
                pos[0] = i + 1
                items.append(node(ind + 1))
                continue
            sub = ind + 1 + indent(rest)
            if re.match(r'([A-Za-z_][\w./-]*|"[^"]*"|\'[^\']*\')\s*:(\s|$)', rest.strip()):
                lines[i] = " " * sub + rest.strip()   # "- key: v" starts a mapping at `sub`
                pos[0] = i
                items.append(mapping(sub))
            else:
                pos[0] = i + 1
                items.append(scalar(rest, i + 1))
        return items

    def mapping(ind):
        d = {}
        while True:
            i = significant(pos[0])
            if i is None or indent(lines[i]) < ind:
                break
            if indent(lines[i]) > ind:
                raise YamlError(f"line {i + 1}: unexpected indentation")
            content = lines[i].strip()
            if content == "-" or content.startswith("- "):
                break
            m = re.match(r'([A-Za-z_][\w./-]*|"[^"]*"|\'[^\']*\')\s*:(?:\s+(.*))?$', content)
            if not m:
                raise YamlError(f"line {i + 1}: expected 'key: value', got {content!r}")
            key = m.group(1).strip("\"'")
            if key in d:
                raise YamlError(f"line {i + 1}: duplicate key {key!r}")
            rest = re.sub(r"^#.*", "", (m.group(2) or "").strip())
            pos[0] = i + 1
            if not rest:
                j = significant(pos[0])
                if j is not None and indent(lines[j]) == ind and \
                        (lines[j].strip() == "-" or lines[j].strip().startswith("- ")):
                    d[key] = sequence(ind)
                else:
                    d[key] = node(ind + 1)
            elif rest[0] in "|>":
                d[key] = block_scalar(re.sub(r"\s+#.*$", "", rest), ind, i + 1)
            else:
                d[key] = scalar(rest, i + 1)
        return d

    result = node(0)
    i = significant(pos[0])
    if i is not None:
        raise YamlError(f"line {i + 1}: unexpected content {lines[i].strip()!r}")
    return result


# --------------------------------------------------------------------------------------------


def run(cmd: list) -> tuple:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


def check_dashboard(path: str, expo: Exposition, workdir: str) -> int:
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: not valid JSON: {e}")
        return 0
    where = os.path.basename(path)
    if not isinstance(dash, dict):
        fail(f"{where}: top level is not an object")
        return 0
    for key, typ in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                     ("templating", dict), ("time", dict)):
        if not isinstance(dash.get(key), typ):
            fail(f"{where}: missing or mistyped top-level field {key!r}")
    if isinstance(dash.get("uid"), str) and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dash["uid"]):
        fail(f"{where}: uid {dash['uid']!r} is not 1-40 of [A-Za-z0-9_-]")
    if isinstance(dash.get("schemaVersion"), int) and not 36 <= dash["schemaVersion"] <= 41:
        fail(f"{where}: schemaVersion {dash['schemaVersion']} outside 36..41")
    if dash.get("id") is not None:
        fail(f"{where}: id must be null in a provisioned dashboard")

    # Template variables.
    tvars = (dash.get("templating") or {}).get("list") or []
    by_name = {}
    for v in tvars:
        name = v.get("name")
        if not name or name in by_name:
            fail(f"{where}: template variable without a name or defined twice: {name!r}")
        by_name[name] = v
    ds = by_name.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(f"{where}: needs a template variable 'datasource' of type datasource, "
             f"query prometheus")
    for name, multi in (("job", False), ("instance", True)):
        v = by_name.get(name)
        if not v or v.get("type") != "query":
            fail(f"{where}: needs a template variable {name!r} of type query")
            continue
        if v.get("datasource") != DATASOURCE:
            fail(f"{where}: variable {name!r}: datasource must be {DATASOURCE}")
        if multi and not (v.get("multi") or v.get("includeAll")):
            fail(f"{where}: variable {name!r} should allow several instances (multi/includeAll)")
    variables = set(by_name)

    rules = []   # (record name, substituted expression, where)
    analyses_by_panel = {}

    for name, v in by_name.items():
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        vw = f"{where}: variable {name!r}"
        m = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q or "")
        if not m:
            fail(f"{vw}: query {q!r} is not label_values([selector,] label)")
            continue
        if v.get("definition") not in (None, q):
            fail(f"{vw}: definition {v.get('definition')!r} differs from the query {q!r}")
        if m.group(1) is None:
            fail(f"{vw}: label_values without a selector would list every target's {m.group(2)}")
            continue
        try:
            a = analyse(m.group(1))
        except ValueError as e:
            fail(f"{vw}: {e}")
            continue
        check_names(vw, a, expo)
        if len(a.selectors) != 1 or a.funcs:
            fail(f"{vw}: label_values needs one plain series selector")
        elif m.group(2) not in TARGET_LABELS | set(known_labels(expo, a.selectors[0].name) or {}):
            fail(f"{vw}: {a.selectors[0].name} has no label {m.group(2)!r}")
        rules.append((f"dashboard:variable_{name}", substitute(m.group(1), variables, vw), vw))

    # Panels (rows' nested panels included).
    flat = []
    for p in dash.get("panels") or []:
        flat.append(p)
        if p.get("type") == "row":
            flat.extend(p.get("panels") or [])
    ids, titles, rects = set(), set(), []
    for p in flat:
        pid = p.get("id")
        pw = f"{where}: panel {pid} {p.get('title')!r}"
        if not isinstance(pid, int) or pid in ids:
            fail(f"{pw}: id missing, not an integer or duplicate")
        ids.add(pid)
        if p.get("type") not in PANEL_TYPES:
            fail(f"{pw}: type {p.get('type')!r} not one of {sorted(PANEL_TYPES)}")
        if not isinstance(p.get("title"), str) or not p["title"].strip():
            fail(f"{pw}: no title")
        elif p.get("type") != "row":
            if p["title"] in titles:
                fail(f"{pw}: duplicate title")
            titles.add(p["title"])
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy"):
            fail(f"{pw}: gridPos needs integer h, w, x, y")
        else:
            if g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
                fail(f"{pw}: gridPos {g} outside the 24-column grid")
            for other, og in rects:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    fail(f"{pw}: overlaps panel {other}")
            rects.append((pid, g))
        if p.get("type") == "row":
            if p.get("targets"):
                fail(f"{pw}: a row has no queries")
            continue
        if p.get("datasource") != DATASOURCE:
            fail(f"{pw}: datasource must be {DATASOURCE}")
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            fail(f"{pw}: no targets")
            continue
        refids = set()
        analyses = []
        for t in targets:
            ref = t.get("refId")
            tw = f"{pw} target {ref}"
            if not isinstance(ref, str) or not re.fullmatch(r"[A-Z]{1,2}", ref) or ref in refids:
                fail(f"{tw}: refId missing, malformed or duplicate")
            refids.add(ref)
            if t.get("datasource", DATASOURCE) != DATASOURCE:
                fail(f"{tw}: datasource must be {DATASOURCE}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                fail(f"{tw}: no expr")
                continue
            try:
                a = analyse(expr)
            except ValueError as e:
                fail(f"{tw}: {e}")
                continue
            analyses.append(a)
            check_names(tw, a, expo)
            for s in a.selectors:
                got = {m.label: m for m in s.matchers}
                for label in ("job", "instance"):
                    m = got.get(label)
                    if not m or m.op != "=~" or not m.variable or \
                            var_name(VAR_IN_STRING_RE.search(m.value).group()) != label:
                        fail(f"{tw}: {s.name} lacks {label}=~\"${label}\" (every selector "
                             f"follows the job and instance variables)")
            rules.append((f"dashboard:panel_{pid}_{ref}", substitute(expr, variables, tw), tw))
        analyses_by_panel[pid] = (p.get("title"), analyses)

    for t in DASHBOARD_TOPICS:
        if not any(topic_covered(t, an) for _, an in analyses_by_panel.values()):
            fail(f"{where}: no panel shows {t.name} (needs {', '.join(sorted(t.metrics))}"
                 + (f" by {', '.join(sorted(t.by))}" if t.by else "")
                 + (f" with {', '.join(f'{k}={v}' for k, v in sorted(t.matchers))}"
                    if t.matchers else "")
                 + (f" through {', '.join(sorted(t.funcs))}" if t.funcs else "") + ")")
    if not any(lab == "instance" for _, an in analyses_by_panel.values() for a in an
               for kw, labels in a.groupings if kw == "by" for lab in labels):
        fail(f"{where}: no panel breaks anything down by instance")
    used = {s.name for _, an in analyses_by_panel.values() for a in an for s in a.selectors}
    for topic, rx in MISSING_METRIC_TOPICS:
        exported = sorted(n for n in expo.labels if rx.match(n))
        if not exported:
            notes.append(f"requested panel '{topic}': egressd exports no metric for it "
                         f"(pattern {rx.pattern})")
        elif not set(exported) & used:
            fail(f"{where}: egressd now exports {', '.join(exported)} for '{topic}': add a panel")
    unused = sorted(n for n in expo.labels if n.startswith("egressd_") and n not in used
                    and not any(n == b + s for b in expo.types for s in ("_sum", "_count")
                                if expo.types[b] == "histogram"))
    for n in unused:
        notes.append(f"dashboard does not use exported metric {n}")

    # promtool parses every expression as a recording rule.
    if rules:
        rules_file = os.path.join(workdir, "dashboard_rules.yml")
        with open(rules_file, "w", encoding="utf-8") as f:
            json.dump({"groups": [{"name": "dashboard_expressions", "rules": [
                {"record": r, "expr": e} for r, e, _ in rules]}]}, f, indent=1)
        rc, out = run(["promtool", "check", "rules", "--lint=none", rules_file])
        if rc != 0:
            for record, _, w in rules:
                for line in out.splitlines():
                    if f'"{record}"' in line:
                        fail(f"{w}: promtool: {line.strip()}")
            fail(f"{where}: promtool check rules failed on the dashboard expressions:\n{out}")
    return len(rules)


def check_alerts(path: str, tests_path: str, expo: Exposition) -> tuple:
    where = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = load_yaml(f.read())
    except (OSError, YamlError) as e:
        fail(f"{path}: cannot read: {e}")
        return 0, 0
    rules = []
    for g in (doc or {}).get("groups") or []:
        for r in g.get("rules") or []:
            rules.append(r)
    recorded = {r["record"] for r in rules if isinstance(r, dict) and "record" in r}
    alerts = {}
    for r in rules:
        if not isinstance(r, dict) or not isinstance(r.get("expr"), str):
            fail(f"{where}: rule without an expression: {r!r}")
            continue
        name = r.get("alert") or r.get("record")
        rw = f"{where}: {name}"
        try:
            a = analyse(r["expr"])
        except ValueError as e:
            fail(f"{rw}: {e}")
            continue
        if a.variables:
            fail(f"{rw}: Grafana variables in a Prometheus rule: {a.variables}")
        check_names(rw, a, expo, recorded)
        if "alert" not in r:
            continue
        if name in alerts:
            fail(f"{rw}: alert defined twice")
        alerts[name] = a
        labels = r.get("labels") or {}
        ann = r.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            fail(f"{rw}: labels.severity must be one of {sorted(SEVERITIES)}")
        if not str(ann.get("summary", "")).strip():
            fail(f"{rw}: no summary annotation")
        runbook = str(ann.get("runbook", "")).strip()
        if not runbook or "\n" in runbook:
            fail(f"{rw}: needs a one-line runbook annotation")
    for t in ALERT_TOPICS:
        if not any(topic_covered(t, [a]) for a in alerts.values()):
            fail(f"{where}: no alert for {t.name} (needs {', '.join(sorted(t.metrics))}"
                 + (f" with {', '.join(f'{k}={v}' for k, v in sorted(t.matchers))}"
                    if t.matchers else "") + ")")

    rc, out = run(["promtool", "check", "rules", "--lint=all", "--lint-fatal", path])
    m = re.search(r"SUCCESS: (\d+) rules found", out)
    if rc != 0 or not m:
        fail(f"{where}: promtool check rules failed:\n{out}")
    elif int(m.group(1)) != len(rules):
        fail(f"{where}: promtool found {m.group(1)} rules, this checker {len(rules)}: "
             f"the file uses YAML this checker's loader reads differently")

    # Unit tests: every alert fires somewhere and is expected silent somewhere.
    tw = os.path.basename(tests_path)
    try:
        with open(tests_path, encoding="utf-8") as f:
            tdoc = load_yaml(f.read())
    except (OSError, YamlError) as e:
        fail(f"{tests_path}: cannot read: {e}")
        return len(alerts), 0
    files = [os.path.normpath(os.path.join(os.path.dirname(tests_path), p))
             for p in tdoc.get("rule_files") or []]
    if os.path.normpath(path) not in files:
        fail(f"{tw}: rule_files does not load {path}")
    fires, silent, cases = set(), set(), 0
    for t in tdoc.get("tests") or []:
        for c in t.get("alert_rule_test") or []:
            cases += 1
            name = c.get("alertname")
            if name not in alerts:
                fail(f"{tw}: test {t.get('name')!r} checks unknown alert {name!r}")
            (fires if c.get("exp_alerts") else silent).add(name)
    for name in alerts:
        if name not in fires:
            fail(f"{tw}: no test case where {name} fires")
        if name not in silent:
            fail(f"{tw}: no test case where {name} must stay silent")
    rc, out = run(["promtool", "test", "rules", tests_path])
    if rc != 0:
        fail(f"{tw}: promtool test rules failed:\n{out}")
    return len(alerts), cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", required=True, help="a /metrics scrape of a live egressd")
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--alerts", required=True)
    ap.add_argument("--tests", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    try:
        with open(args.metrics, encoding="utf-8") as f:
            expo = parse_exposition(f.read())
    except (OSError, ValueError) as e:
        print(f"{PROG}: cannot read the scrape {args.metrics}: {e}", file=sys.stderr)
        return 2
    if not any(n.startswith("egressd_") for n in expo.labels):
        print(f"{PROG}: the scrape holds no egressd_ metric", file=sys.stderr)
        return 2
    n_exprs = check_dashboard(args.dashboard, expo, args.workdir)
    n_alerts, n_cases = check_alerts(args.alerts, args.tests, expo)
    for n in notes:
        print(f"{PROG}: note: {n}")
    if problems:
        for p in problems:
            print(f"{PROG}: FAIL: {p}")
        print(f"{PROG}: {len(problems)} problem(s)")
        return 1
    print(f"{PROG}: OK: {len(expo.labels)} exported series names; dashboard: {n_exprs} "
          f"expressions parsed by promtool, names and labels known, "
          f"{len(DASHBOARD_TOPICS)} topics covered; alerts: {n_alerts} rules, "
          f"{n_cases} unit-test cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
