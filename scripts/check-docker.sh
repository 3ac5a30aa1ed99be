#!/usr/bin/env bash
# Checks docker/ without a Docker engine: the compose file parses and names
# the services and variables the service needs; nginx accepts its config;
# Prometheus, its alert rules (and their unit tests) and Alertmanager accept
# theirs (promtool and amtool, installed from Debian if missing); the Grafana
# dashboard is well formed (scripts/check-dashboard.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re, sys
try:
    import yaml
except ImportError:
    sys.exit("PyYAML missing: pip install pyyaml")
doc = yaml.safe_load(open("docker/compose.yaml"))
services = doc["services"]
for name in ["postgres", "redis", "kafka", "commerce-1", "commerce-2", "nginx",
             "prometheus", "alertmanager", "grafana"]:
    assert name in services, f"compose: service {name} missing"
# Pinned images: a moving tag would change what users run under them.
for name, svc in services.items():
    image = svc.get("image")
    if image:
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"compose: {name} image {image} is not pinned to a version"
env = services["commerce-1"]["environment"]
readme = open("README.md").read()
for key in env:
    assert key in readme, f"compose sets {key}, which README.md does not document"
for key in ["COMMERCE__DATABASE__URL", "COMMERCE__REDIS__URL", "COMMERCE__KAFKA__BROKERS"]:
    assert key in env, f"compose: {key} not set"
# Every variable compose reads is in .env.example, and the secrets have no
# default a user could start with unawares.
example = open("docker/.env.example").read()
text = open("docker/compose.yaml").read()
for var in set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text)):
    assert re.search(rf"^{var}=", example, re.M), f"compose reads {var}, which docker/.env.example lacks"
for secret in ["COMMERCE_ADMIN_KEY", "COMMERCE_TOKEN_SECRET", "COMMERCE_GRAFANA_ADMIN_PASSWORD"]:
    assert "${" + secret + ":?" in text, f"compose: {secret} must be required (${{{secret}:?...}})"
assert env.get("COMMERCE__AUTH__PRODUCTION") == "true", "compose: instances must run in production mode"
# The k6 profile: only with --profile k6, against nginx, seeding first, and
# its default scenario is a script loadtests/k6 has.
import os
k6 = services.get("k6")
assert k6, "compose: service k6 missing"
assert k6.get("profiles") == ["k6"], "compose: k6 must run only with --profile k6"
k6env = k6["environment"]
assert k6env["BASE_URLS"].startswith("http://nginx:"), "compose: k6 must go through nginx"
default = re.match(r"\$\{K6_SCENARIO:-([a-z0-9-]+)\}", k6env["K6_SCENARIO"])
assert default and os.path.isfile(f"loadtests/k6/{default.group(1)}.js"), "compose: K6_SCENARIO's default is no loadtests/k6 script"
assert "compose-seed.js" in " ".join(k6["command"]) and os.path.isfile("loadtests/k6/compose-seed.js")
for var in ["TOKENS_FILE", "DATA_FILE"]:
    assert var in k6env, f"compose: k6 needs {var}"
df = open("docker/Dockerfile").read()
assert "commerce-server" in df and "ENTRYPOINT" in df
print("compose and Dockerfile: ok")
PY
if command -v nginx >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  # Upstream names resolve only inside compose: check syntax against loopback.
  sed 's/commerce-[12]:8080/127.0.0.1:8080/' docker/nginx.conf > "$tmp/nginx.conf"
  nginx -t -q -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid; error_log $tmp/error.log;" 2>&1 | grep -v 'could not open error log' || true
  nginx -t -q -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid; error_log $tmp/error.log;" >/dev/null 2>&1 \
    && echo "nginx.conf: ok" || { echo "nginx.conf: invalid"; exit 1; }
  rm -rf "$tmp"
else
  echo "nginx not installed: nginx.conf not checked"
fi

# Monitoring configuration: promtool and amtool come with Debian's prometheus
# and prometheus-alertmanager (only the binaries are used; their services are
# not started here, and nothing here starts them).
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus and prometheus-alertmanager (for promtool and amtool)"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
  fi
fi
if command -v promtool >/dev/null 2>&1; then
  promtool check config docker/prometheus/prometheus.yml
  promtool check rules docker/prometheus/alerts.yml
  promtool test rules docker/prometheus/alerts_test.yml
else
  echo "promtool not installed: Prometheus config and alert rules not checked"
fi
if command -v amtool >/dev/null 2>&1; then
  amtool check-config docker/alertmanager/alertmanager.yml
else
  echo "amtool not installed: alertmanager.yml not checked"
fi
# Every runbook_url names a section docs/runbook.md has.
python3 - <<'PY'
import re
rules = open("docker/prometheus/alerts.yml").read()
anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.+)$", open("docs/runbook.md").read(), re.M)}
for url in set(re.findall(r"runbook_url: docs/runbook.md#(\S+)", rules)):
    assert url in anchors, f"alerts.yml: runbook_url #{url} has no section in docs/runbook.md"
print("runbook links: ok")
PY
python3 scripts/check-dashboard.py
