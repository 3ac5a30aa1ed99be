#!/usr/bin/env bash
# Checks docker/ without a Docker engine: the compose file parses and names
# the services and variables the service needs; nginx accepts its config.
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
for name in ["postgres", "redis", "kafka", "commerce-1", "commerce-2", "nginx"]:
    assert name in services, f"compose: service {name} missing"
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
for var in set(re.findall(r"\$\{([A-Z_]+)", text)):
    assert re.search(rf"^{var}=", example, re.M), f"compose reads {var}, which docker/.env.example lacks"
for secret in ["COMMERCE_ADMIN_KEY", "COMMERCE_TOKEN_SECRET"]:
    assert "${" + secret + ":?" in text, f"compose: {secret} must be required (${{{secret}:?...}})"
assert env.get("COMMERCE__AUTH__PRODUCTION") == "true", "compose: instances must run in production mode"
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
