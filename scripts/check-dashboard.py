#!/usr/bin/env python3
"""Checks the Grafana dashboard without Grafana.

Static (always): the JSON parses, has a schemaVersion, every panel's datasource
is the provisioned Prometheus (same uid as
docker/grafana/provisioning/datasources/prometheus.yml), and every non-row
panel has at least one query.

Live (--prometheus URL): runs every panel's PromQL against that Prometheus
(Grafana's $__rate_interval / $__interval / $__range replaced by fixed
windows) and asserts each returns data, except the few listed in ALLOWED_EMPTY
whose metric only exists after a rare event.

  python3 scripts/check-dashboard.py
  python3 scripts/check-dashboard.py --prometheus http://127.0.0.1:19090
  python3 scripts/check-dashboard.py --prometheus URL --time 1700000000 --window 90s --json

--time evaluates every query at that instant (unix seconds) instead of now,
--window replaces Grafana's intervals with that window (a dashboard whose time
range is the run: anything the run did shows), --json prints one JSON object
(the load-test runner reads it for its report).
"""
import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docker/grafana/dashboards/commerce.json"
DATASOURCES = ROOT / "docker/grafana/provisioning/datasources/prometheus.yml"
# Grafana 11 writes 39; older numbers would be migrated on load and could
# lose fields, newer ones are refused by older Grafanas.
MIN_SCHEMA = 36

# Queries whose metric is created by an event a short healthy run need not
# have: (panel title, refId) -> why it may be empty.
ALLOWED_EMPTY = {
    ("Breaker transitions", "A"): "counted only once a breaker changes state",
    ("Waiting-room operations on the local limiter (Redis failing)", "A"):
        "counted only while Redis fails",
}


def provisioned_uid():
    # The provisioning file is tiny and flat: read the uid without PyYAML.
    m = re.search(r"^\s*uid:\s*(\S+)", DATASOURCES.read_text(), re.M)
    if not m:
        sys.exit(f"{DATASOURCES}: no datasource uid")
    return m.group(1)


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels inside a collapsed row


def check_static(dash):
    errors = []
    uid = provisioned_uid()
    schema = dash.get("schemaVersion")
    if not isinstance(schema, int) or schema < MIN_SCHEMA:
        errors.append(f"schemaVersion {schema!r}: expected an integer >= {MIN_SCHEMA}")
    if not dash.get("uid") or not dash.get("title"):
        errors.append("dashboard needs a uid and a title (provisioning keys on the uid)")
    ids = [p.get("id") for p in panels_of(dash)]
    if len(ids) != len(set(ids)):
        errors.append("panel ids are not unique")
    queries = []
    for p in panels_of(dash):
        if p.get("type") == "row":
            continue
        title = p.get("title") or f"panel {p.get('id')}"
        ds = p.get("datasource") or {}
        if ds.get("uid") != uid:
            errors.append(f"{title}: datasource uid {ds.get('uid')!r}, provisioned is {uid!r}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{title}: no query")
        for t in targets:
            expr = (t.get("expr") or "").strip()
            tds = t.get("datasource") or ds
            if not expr:
                errors.append(f"{title} {t.get('refId')}: empty query")
            elif tds.get("uid") != uid:
                errors.append(f"{title} {t.get('refId')}: datasource uid {tds.get('uid')!r}")
            else:
                queries.append((title, t.get("refId"), expr))
    for key in ALLOWED_EMPTY:
        if key not in {(t, r) for t, r, _ in queries}:
            errors.append(f"ALLOWED_EMPTY names {key}, which the dashboard lacks")
    return errors, queries


def grafana_to_promql(expr, window=None):
    # Fixed windows stand in for Grafana's variables: 1m covers 4 scrapes at 15 s.
    for var, value in [("$__rate_interval", window or "1m"), ("$__interval", window or "1m"),
                       ("$__range", window or "5m")]:
        expr = expr.replace(var, value)
    return expr


def run_query(base, expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = at
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body.get("error", "query failed"))
    return body["data"]["result"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", help="base URL of a Prometheus scraping the service")
    ap.add_argument("--time", help="evaluate at this unix time instead of now")
    ap.add_argument("--window", help="replaces $__rate_interval, $__interval and $__range (e.g. 90s)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()
    dash = json.loads(DASHBOARD.read_text())
    errors, queries = check_static(dash)
    if errors:
        for e in errors:
            print(f"dashboard: {e}")
        sys.exit(1)
    if not args.json:
        print(f"dashboard: ok ({len(queries)} queries, datasource {provisioned_uid()})")
    if not args.prometheus:
        return
    failed = 0
    rows = []
    for title, ref, expr in queries:
        promql = grafana_to_promql(expr, args.window)
        row = {"title": title, "ref": ref, "promql": promql, "series": 0, "why": ""}
        rows.append(row)
        try:
            result = run_query(args.prometheus, promql, args.time)
        except Exception as e:  # a refused query is a dashboard bug
            row.update(status="error", why=str(e))
            failed += 1
            continue
        row["series"] = len(result)
        if result:
            row["status"] = "data"
        elif (title, ref) in ALLOWED_EMPTY:
            row.update(status="allowed-empty", why=ALLOWED_EMPTY[(title, ref)])
        else:
            row.update(status="no-data")
            failed += 1
    if args.json:
        print(json.dumps({"prometheus": args.prometheus, "time": args.time, "window": args.window,
                          "queries": rows, "failed": failed}))
        sys.exit(1 if failed else 0)
    for row in rows:
        label = f"{row['title']} [{row['ref']}]"
        if row["status"] == "data":
            print(f"ok    {label}: {row['series']} series")
        elif row["status"] == "allowed-empty":
            print(f"empty {label}: allowed ({row['why']})")
        elif row["status"] == "error":
            print(f"FAIL  {label}: {row['why']}")
        else:
            print(f"FAIL  {label}: no data")
    if failed:
        sys.exit(f"dashboard: {failed} of {len(queries)} queries failed against {args.prometheus}")
    print(f"dashboard: every query answered by {args.prometheus}")


if __name__ == "__main__":
    main()
