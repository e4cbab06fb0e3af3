#!/bin/bash
# http_dashboard.sh - metad's HTTP endpoint: /api/v1/status, /api/v1/servers,
# /metrics, the dashboard page, and robustness against bad requests.
source "$(dirname "$0")/lib.sh"

HTTP_PORT=$(dfs_free_port)
URL=http://127.0.0.1:$HTTP_PORT
dfs_start_metad -o http_listen=127.0.0.1:$HTTP_PORT
for i in 1 2 3; do dfs_start_chunkd "$i"; done
wait_until 30 servers_up_ge 3 || fail "only $(dfs_servers_up) of 3 chunk servers registered"
wait_until 10 port_open "$HTTP_PORT" || fail "http port $HTTP_PORT not open"

# Wait until every server has sent a heartbeat with capacity.
status_ready() {
    curl -sf --max-time 5 "$URL/api/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["servers_up"] == 3 and all(v["total_bytes"] > 0 for v in s["servers"]) else 1)'
}
wait_until 20 status_ready || fail "status never showed 3 servers with capacity"

check_status() {
    curl -sf --max-time 5 -D "$T/status.hdr" "$URL/api/v1/status" -o "$T/status.json" || return 1
    grep -qi '^content-type: application/json' "$T/status.hdr" || { echo "bad content type"; return 1; }
    python3 - "$T/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
def need(obj, keys, where):
    for k in keys:
        if k not in obj:
            raise SystemExit(f"missing {where}.{k}")
need(s, ["status", "node_id", "is_leader", "leader", "raft_index", "servers_up",
         "servers_total", "capacity", "chunks", "repairs", "files", "dirs", "servers"], "status")
need(s["chunks"], ["total", "healthy", "under_goal", "over_goal", "missing"], "chunks")
need(s["repairs"], ["queue", "running", "done", "bytes_replicated"], "repairs")
need(s["capacity"], ["total_bytes", "used_bytes", "avail_bytes"], "capacity")
assert s["status"] == "ok" and s["is_leader"] is True, s["status"]
assert s["servers_up"] == 3 and len(s["servers"]) == 3, s["servers_up"]
assert s["raft_index"] > 0
assert s["dirs"] >= 1  # the root
labels = set()
for v in s["servers"]:
    need(v, ["id", "address", "label", "state", "total_bytes", "used_bytes", "avail_bytes",
             "chunks", "load", "last_seen", "last_seen_ago_ms", "bytes_read", "bytes_written",
             "bytes_replicated", "dirs"], "server")
    assert v["state"] == "up", v
    assert v["total_bytes"] > 0 and v["address"].startswith("127.0.0.1:"), v
    labels.add(v["label"])
assert labels == {"host1", "host2", "host3"}, labels
assert s["capacity"]["total_bytes"] >= sum(v["total_bytes"] for v in s["servers"]) > 0
EOF
}
check "GET /api/v1/status: 3 servers up, every field present" check_status

check_servers() {
    curl -sf --max-time 5 "$URL/api/v1/servers" | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert len(s["servers"]) == 3 and all(v["state"] == "up" for v in s["servers"])'
}
check "GET /api/v1/servers" check_servers

check_metrics() {
    curl -sf --max-time 5 -D "$T/metrics.hdr" "$URL/metrics" -o "$T/metrics.txt" || return 1
    grep -qi '^content-type: text/plain; version=0.0.4' "$T/metrics.hdr" &&
        grep -qx 'dfs_servers_up 3' "$T/metrics.txt" &&
        grep -q '^dfs_capacity_bytes [1-9]' "$T/metrics.txt" &&
        grep -q '^dfs_used_bytes ' "$T/metrics.txt" &&
        grep -q '^dfs_chunks{state="healthy"} ' "$T/metrics.txt" &&
        grep -q '^dfs_chunks{state="missing"} 0' "$T/metrics.txt" &&
        grep -q '^dfs_repairs_queued ' "$T/metrics.txt" &&
        grep -q '^dfs_server_capacity_bytes{id="[0-9]*"} [1-9]' "$T/metrics.txt" &&
        [ "$(grep -c '^dfs_server_up{id=' "$T/metrics.txt")" = 3 ] &&
        grep -q '^# TYPE dfs_servers_up gauge' "$T/metrics.txt" &&
        # every sample line is "name{labels} value" or "name value"
        ! grep -v '^#' "$T/metrics.txt" | grep -Evq '^[a-z_]+(\{[^}]*\})? [0-9.]+$'
}
check "GET /metrics: dfs_servers_up 3 and friends" check_metrics

check_html() {
    curl -sf --max-time 5 -D "$T/index.hdr" "$URL/" -o "$T/index.html" || return 1
    grep -qi '^content-type: text/html' "$T/index.hdr" &&
        grep -q '<!DOCTYPE html>' "$T/index.html" &&
        grep -q '/api/v1/status' "$T/index.html" &&
        ! grep -Eq '(src|href)="https?:' "$T/index.html"
}
check "GET / returns the self-contained HTML dashboard" check_html

http_code() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@"; }
check "unknown path: 404" [ "$(http_code "$URL/nope")" = 404 ]
check "POST: 405" [ "$(http_code -X POST -d x=1 "$URL/api/v1/status")" = 405 ]
check "HEAD /metrics: 200" [ "$(http_code -I "$URL/metrics")" = 200 ]

# Raw requests: send bytes, read the answer until metad closes (python, with a
# deadline so a server that keeps the connection open fails the test).
raw() { # python-bytes-literal [max seconds] -> prints the status line (or "closed")
    python3 - "$HTTP_PORT" "$1" "${2:-5}" <<'EOF'
import socket, sys, time
# argv[2] is a python bytes expression written by this script, e.g. b"a" * 100000
port, data, limit = int(sys.argv[1]), eval(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=limit)
try:
    s.sendall(data)
except OSError:
    pass  # metad may close while we still send (oversized request)
got, end = b"", time.time() + limit
try:
    while time.time() < end:
        b = s.recv(65536)
        if not b:
            break
        got += b
    else:
        print("still open"); sys.exit(0)
except socket.timeout:
    print("still open"); sys.exit(0)
except ConnectionResetError:
    pass
print(got.split(b"\r\n", 1)[0].decode("latin-1") if got else "closed")
EOF
}
for req in "b'GARBAGE\\r\\n\\r\\n'" "b'GET /\\r\\n\\r\\n'" "b'GET / HTTP/1.1\\r\\nno colon here\\r\\n\\r\\n'" \
           "b'GET nopath HTTP/1.1\\r\\n\\r\\n'" "b'GET / HTTP/1.1\\r\\nX: a\\x00b\\r\\n\\r\\n'" \
           "b'\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03\\n\\n'" \
           "b'GET / HTTP/1.1\\r\\n folded: x\\r\\n\\r\\n'"; do
    r=$(raw "$req")
    check "malformed request $req: 400 ($r)" [ "${r:0:12}" = "HTTP/1.1 400" ]
done
r=$(raw "b'GET / HTTP/2.0\\r\\n\\r\\n'")
check "HTTP/2.0 request line: 505 ($r)" [ "${r:0:12}" = "HTTP/1.1 505" ]
r=$(raw "b'GET /' + b'a' * 100000 + b' HTTP/1.1\\r\\n\\r\\n'")
check "100 KB request line: answered/closed, not served ($r)" \
    [ "$r" = closed -o "${r:0:12}" = "HTTP/1.1 414" ]
r=$(raw "b'GET / HTTP/1.1\\r\\n' + b'X-Big: ' + b'y' * 20000 + b'\\r\\n\\r\\n'")
check "20 KB header: answered/closed, not served ($r)" \
    [ "$r" = closed -o "${r:0:12}" = "HTTP/1.1 431" ]
# An incomplete request is dropped after the 5 s read deadline.
r=$(raw "b'GET / HTTP/1.1\\r\\nHost: x\\r\\n'" 9)
check "incomplete request closed by the read deadline ($r)" [ "$r" = closed ]
# A burst of idle connections does not stop metad from serving.
python3 - "$HTTP_PORT" <<'EOF' &
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(100)]
time.sleep(2)
EOF
IDLE_PID=$!
sleep 0.5
check "serves while 100 idle connections are open" status_ready
wait "$IDLE_PID"

check "metad still running" kill -0 "$METAD_PID"
check "status still served after bad requests" check_status
check "metrics still served after bad requests" check_metrics
check "RPC still served (dfsctl status)" servers_up_eq 3
log "PASS http_dashboard"
