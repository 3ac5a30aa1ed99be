# Sourced by the k6-side experiments (k6-floor.sh, contention-floor.sh):
# a static nginx answering in the service's place, 10 000 fake tokens as
# the runner writes them, and k6 placed where the runner puts it (`pin`).
#
#   stub_start "<http-level lines>" "<server-level locations>"
# sets `dir` (a temporary folder, removed on exit) and `base` (the URL).
stub_start() {
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  dir=$(mktemp -d)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/cb; proxy_temp_path $dir/p; fastcgi_temp_path $dir/f;
  uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
  $1
  server {
    listen 127.0.0.1:$port backlog=8192;
    default_type application/json;
    location /health/live { return 200 '{"status":"ok"}'; }
    $2
  }
}
CONF
  nginx -c "$dir/nginx.conf"
  trap 'kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
  # The stub reads no token; k6 loads them as the scenario does.
  python3 -c "import json; print(json.dumps([{'user_id': i, 'token': 'x' * 180} for i in range(1, 10001)]))" > "$dir/tokens.json"
  source "$root/loadtests/k6-cpus.sh"
  export GOGC=off K6_SYSTEM_TAGS=status,method,name,group,check,scenario,expected_response
  base="http://127.0.0.1:$port"
}
