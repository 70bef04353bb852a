#!/usr/bin/env python3
"""Checks the shipped monitoring: alert rules (promtool check + unit tests) and the dashboard.

Usage: check_rules.py SOURCE_ROOT

1. Every tokensign_* metric that packaging/prometheus/tokensign-alerts.yml or
   packaging/grafana/tokensign-dashboard.json queries is in tests/monitoring/metrics.txt (the
   contract), a histogram's only with _bucket, _sum or _count; the dashboard is well-formed JSON
   whose queries all use the ${DS_PROMETHEUS} data source and which has the instance and issuer
   variables; every alert has a unit test in which it fires.
2. promtool check rules, and promtool test rules tests/monitoring/tokensign-alerts.test.yml;
   the dashboard's queries (variables filled in) pass promtool check rules as recording rules,
   which parses them as PromQL.

Exit 0 when all pass, 1 when one fails, 77 (skipped) when promtool is missing and
TOKENSIGN_REQUIRE_PROMTOOL is not set: the checks of step 1 still run first and still fail.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

RULES = "packaging/prometheus/tokensign-alerts.yml"
RULE_TESTS = "tests/monitoring/tokensign-alerts.test.yml"
DASHBOARD = "packaging/grafana/tokensign-dashboard.json"
METRICS = "tests/monitoring/metrics.txt"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
NAME = re.compile(r"\btokensign_[a-zA-Z0-9_]+")


def load_metrics(path):
	metrics = {}
	with open(path, encoding="utf-8") as f:
		for line in f:
			line = line.strip()
			if not line or line.startswith("#"):
				continue
			name, kind = line.split()
			metrics[name] = kind
	return metrics


def unknown_names(expr, metrics):
	"""The tokensign_* names in a query that the contract does not have."""
	bad = []
	for name in NAME.findall(expr):
		if name in metrics:
			continue
		base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
		if base is not None and metrics.get(base) == "histogram":
			continue
		bad.append(name)
	return bad


def rule_exprs(rules):
	for group in rules["groups"]:
		for rule in group["rules"]:
			yield rule.get("alert") or rule.get("record"), rule["expr"]


def dashboard_panels(panels):
	for p in panels:
		yield p
		yield from dashboard_panels(p.get("panels", []))


def dashboard_queries(dash):
	"""(where, expr) of every panel query."""
	for p in dashboard_panels(dash.get("panels", [])):
		for t in p.get("targets", []):
			yield f"{DASHBOARD}: panel '{p.get('title')}' query {t.get('refId')}", t, p


def dashboard_as_rules(dash):
	"""The dashboard's queries as recording rules, with Grafana's variables filled in, so that
	promtool parses them."""
	rules = []
	for i, (_, t, _) in enumerate(dashboard_queries(dash)):
		expr = t.get("expr", "")
		expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
		rules.append({"record": f"dashboard:query_{i}", "expr": expr.replace("$issuer", ".*")})
	return {"groups": [{"name": "dashboard", "rules": rules}]}


def check_dashboard(dash, metrics, errors):
	names = [v.get("name") for v in dash.get("templating", {}).get("list", [])]
	for want in ("DS_PROMETHEUS", "instance", "issuer"):
		if want not in names:
			errors.append(f"{DASHBOARD}: no template variable '{want}'")
	for v in dash["templating"]["list"]:
		q = v.get("query")
		q = q.get("query", "") if isinstance(q, dict) else (q or "")
		for name in unknown_names(q + " " + v.get("definition", ""), metrics):
			errors.append(f"{DASHBOARD}: variable '{v['name']}' queries {name}, not in {METRICS}")
	queries = 0
	for where, t, p in dashboard_queries(dash):
		queries += 1
		ds = (t.get("datasource") or p.get("datasource") or {}).get("uid")
		if ds != "${DS_PROMETHEUS}":
			errors.append(f"{where}: data source is {ds!r}, not ${{DS_PROMETHEUS}}")
		expr = t.get("expr", "")
		if not NAME.search(expr):
			errors.append(f"{where}: queries no tokensign metric: {expr!r}")
		for name in unknown_names(expr, metrics):
			errors.append(f"{where}: {name} is not in {METRICS}")
	if queries == 0:
		errors.append(f"{DASHBOARD}: no queries at all")


def check_rule_names(rules, metrics, errors):
	for alert, expr in rule_exprs(rules):
		for name in unknown_names(expr, metrics):
			errors.append(f"{RULES}: {alert} queries {name}, not in {METRICS}")


def check_every_alert_tested(rules, tests, errors):
	fired = set()
	for t in tests.get("tests", []):
		for a in t.get("alert_rule_test", []):
			if a.get("exp_alerts"):
				fired.add(a["alertname"])
	for alert, _ in rule_exprs(rules):
		if alert not in fired:
			errors.append(f"{RULE_TESTS}: no test in which {alert} fires")


def self_test(metrics):
	"""The name check must be able to fail: a made-up name and a counter's _bucket."""
	some_counter = next(n for n, k in metrics.items() if k == "counter")
	for expr in ("rate(tokensign_not_a_metric_total[5m])", some_counter + "_bucket"):
		if not unknown_names(expr, metrics):
			return f"self-test: the name check accepted {expr!r}"
	return None


def run(cmd, root):
	print("+ " + " ".join(cmd), flush=True)
	return subprocess.run(cmd, cwd=root).returncode


def main():
	if len(sys.argv) != 2:
		print("usage: check_rules.py SOURCE_ROOT", file=sys.stderr)
		return 2
	root = sys.argv[1]
	metrics = load_metrics(os.path.join(root, METRICS))
	errors = []
	failed = self_test(metrics)
	if failed:
		errors.append(failed)
	dash = None
	try:
		with open(os.path.join(root, DASHBOARD), encoding="utf-8") as f:
			dash = json.load(f)
		check_dashboard(dash, metrics, errors)
	except json.JSONDecodeError as e:
		errors.append(f"{DASHBOARD}: not valid JSON: {e}")
	with open(os.path.join(root, RULES), encoding="utf-8") as f:
		rules = yaml.safe_load(f)
	with open(os.path.join(root, RULE_TESTS), encoding="utf-8") as f:
		tests = yaml.safe_load(f)
	check_rule_names(rules, metrics, errors)
	check_every_alert_tested(rules, tests, errors)
	for e in errors:
		print("FAIL: " + e)
	if not errors:
		print(f"ok: the rules and the dashboard query only the {len(metrics)} metrics of {METRICS}")

	promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
	if not promtool:
		if os.environ.get("TOKENSIGN_REQUIRE_PROMTOOL"):
			print("FAIL: promtool not found and TOKENSIGN_REQUIRE_PROMTOOL is set "
			      "(Debian: apt-get install prometheus)")
			return 1
		if errors:
			return 1
		print("SKIP: promtool not found (Debian package 'prometheus'); rules not checked")
		return 77
	if run([promtool, "check", "rules", RULES], root) != 0:
		errors.append("promtool check rules failed")
	if run([promtool, "test", "rules", RULE_TESTS], root) != 0:
		errors.append("promtool test rules failed")
	if dash is not None:
		with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="dashboard-queries-") as f:
			yaml.safe_dump(dashboard_as_rules(dash), f)
			f.flush()
			print(f"(the dashboard's queries as recording rules: {DASHBOARD})")
			if run([promtool, "check", "rules", f.name], root) != 0:
				errors.append(f"{DASHBOARD}: a query is not valid PromQL")
	return 1 if errors else 0


if __name__ == "__main__":
	sys.exit(main())
