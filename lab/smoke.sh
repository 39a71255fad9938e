#!/usr/bin/env bash
# Smoke test of the Patroni lab: up, every action, down, nothing left behind.
# Usage (root): lab/smoke.sh          XTASK="path/to/xtask" lab/smoke.sh
# Prints one line per step and a final "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
XTASK=${XTASK:-"cargo run -q -p xtask --"}
pass=0 fail=0
step() { # step NAME CMD...
  local name=$1; shift
  local t0=$SECONDS
  if out=$("$@" 2>&1); then
    pass=$((pass + 1)); echo "ok   $name ($((SECONDS - t0))s)"
  else
    fail=$((fail + 1)); echo "FAIL $name ($((SECONDS - t0))s)"; echo "$out" | tail -40 | sed 's/^/     /'
  fi
}
lab() { $XTASK lab "$@"; }
leader() { lab leader | awk '{print $1}'; }
check_new_leader() { # old leader name
  local now; now=$(leader) && [ "$now" != "$1" ]
}
replica_of() { # first node that is not the leader
  local l; l=$(leader); for n in pg1 pg2 pg3; do [ "$n" != "$l" ] && { echo "${n#pg}"; return; }; done
}
http_code() { # ns url
  ip netns exec pgrlab-client curl -s -o /dev/null -w '%{http_code}' "$1"
}
sql() { # host sql
  PGPASSWORD=pgrouter ip netns exec pgrlab-client /usr/lib/postgresql/15/bin/psql -h "$1" -U postgres -XAtqc "$2"
}

step "up"                lab up
step "status"            lab status
step "leader is pg1"     bash -c "$XTASK lab leader | grep -q '^pg1 198.18.0.11$'"
step "write on leader"   sql 198.18.0.11 "CREATE TABLE smoke(x int); INSERT INTO smoke VALUES (1)"
step "read on replica"   bash -c "sleep 1; PGPASSWORD=pgrouter ip netns exec pgrlab-client /usr/lib/postgresql/15/bin/psql -h 198.18.0.12 -U postgres -XAtqc 'SELECT count(*) FROM smoke' | grep -qx 1"
step "edge1 ip_forward"  bash -c "$XTASK lab exec edge1 -- sysctl -n net.ipv4.ip_forward | grep -qx 1"
step "spawn"             lab spawn edge2 smoke-sleep -- sleep 300
step "kill-proc"         lab kill-proc smoke-sleep
step "link down"         lab link edge2 down
step "edge2 unreachable" bash -c "! ip netns exec pgrlab-client ping -c1 -W1 198.18.0.22 >/dev/null"
step "link up"           lab link edge2 up
step "edge2 reachable"   bash -c "sleep 0.5; ip netns exec pgrlab-client ping -c1 -W2 198.18.0.22 >/dev/null"
step "baseline-up"       lab baseline-up
step "VIP:5000 primary"  bash -c "$XTASK lab psql -- -Atc 'select pg_is_in_recovery()' | grep -qx f"
step "VIP:5001 replica"  bash -c "$XTASK lab psql -- -p 5001 -Atc 'select pg_is_in_recovery()' | grep -qx t"
step "baseline-down"     lab baseline-down
step "VIP released"      bash -c "$XTASK lab vip | grep -qx none"
step "switchover"        lab switchover
step "leader changed"    check_new_leader pg1
old=$(leader)
step "kill-primary"      lab kill-primary --wait
step "new leader"        check_new_leader "$old"
step "start-node ${old#pg}" lab start-node "${old#pg}"
step "healthy"           lab wait-healthy --timeout 60
r=$(replica_of)
step "lag-replica $r"    lab lag-replica "$r"
step "lagging -> 503"    bash -c "[ \"\$(ip netns exec pgrlab-client curl -s -o /dev/null -w '%{http_code}' 'http://198.18.0.1$r:8008/replica?lag=10MB')\" = 503 ]"
step "unlag"             lab unlag
step "caught up -> 200"  bash -c "[ \"\$(ip netns exec pgrlab-client curl -s -o /dev/null -w '%{http_code}' 'http://198.18.0.1$r:8008/replica?lag=10MB')\" = 200 ]"
cur=$(leader)
step "$cur /primary 200" bash -c "[ \"\$(ip netns exec pgrlab-client curl -s -o /dev/null -w '%{http_code}' http://198.18.0.1${cur#pg}:8008/primary)\" = 200 ]"
step "stop-etcd"         lab stop-etcd
step "$cur demoted"      bash -c "for i in \$(seq 1 40); do sleep 0.5; c=\$(ip netns exec pgrlab-client curl -s -o /dev/null -w '%{http_code}' http://198.18.0.1${cur#pg}:8008/primary); [ \"\$c\" = 503 ] && exit 0; done; exit 1"
step "start-etcd"        lab start-etcd
step "healthy again"     lab wait-healthy --timeout 60
step "stop-replicas"     lab stop-replicas
step "replicas 503"      bash -c "for n in 1 2 3; do c=\$(ip netns exec pgrlab-client curl -s -o /dev/null -w '%{http_code}' http://198.18.0.1\$n:8008/replica); [ \"\$c\" = 200 ] && exit 1; done; exit 0"
step "start-replicas"    lab start-replicas
step "down"              lab down
step "down again"        lab down
step "nothing left"      bash -c "! ip netns list | grep -q pgrlab- && ! ip -o link | grep -q pgrlab- && [ ! -e /var/lib/pgrouter-lab ]"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
