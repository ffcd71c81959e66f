#!/usr/bin/env bash
# bench/run.sh — what `make bench` runs. On this machine, on loopback only:
#
#   1. builds bin/ordinal and the load generator, bin/ordinal-bench (make
#      build build-bench);
#   2. runs the fsm micro-benchmarks while nothing else runs, then
#      measures BENCH_SCALE_KEYS (10M) keys: heap per key, snapshot and
#      restore times and a page of a listing (fsm TestKeysAtScale), and
#      how long bin/ordinal takes from process start to serving on a data
#      directory whose snapshot holds them (cmd/ordinal
#      TestRestartWithManyKeys, which commits the keys through a node's
#      Raft log, 4096 per entry, and snapshots it first);
#   3. makes a PKI with the binary (ordinal tls ca/cert create: peer,
#      server and client CAs, certificates for the secured nodes, an admin
#      client and the load generator's client);
#   4. starts a 3-node ordinal cluster (--bootstrap-expect 3, temp data
#      dirs, no security, no key limit: the many-key rows make about a
#      million keys), a plain 5-node cluster (--bootstrap-expect 5, for
#      the quorum-size row strong-leader-64-5nodes), a plain 3-node
#      cluster with metrics off (q1..q3: the first cluster's flags but
#      --metrics-addr "", for strong-leader-64-nometrics; the first
#      cluster's nodes serve metrics, through --pprof-addr), a second 3-node
#      cluster secured as the README's production setup (peer mTLS,
#      client TLS with client certificates required, --admin-names), the
#      no-op ceiling server, the same no-op
#      server over mutual TLS, a single etcd (Debian's etcd-server) and 3
#      ordinal nodes on that etcd (--backend etcd, their own key prefix), and
#      waits until all serve; then measures what the idle servers cost.
#      Every ordinal serve gets its own admin (metrics) address, or
#      --metrics-addr "": the default one would be shared;
#   5. runs `ordinal-bench compare`: every scenario, interleaved in rounds,
#      the ordinal-on-etcd ones (etcdstore-*), the mTLS ones (tls-*,
#      noop-tls-*, against the secured cluster and the TLS no-op server,
#      each right after its plain twin), the metrics-off one (next to
#      its metrics-on twin; the two swap places every other round, as do
#      sf-strong-leader-64 and strong-leader-64) and the multi-address
#      ones (strong-multi-64, weak-prefetch-64: the 3-node cluster through
#      one client made with all three addresses) included;
#   6. takes CPU profiles (Go pprof, through --pprof-addr) of the leader
#      during one more STRONG and one more WEAK run, of the secured
#      cluster's leader during one more STRONG run, and of the no-op server
#      under the same load (BENCH_PROFILE=0 skips them);
#   7. measures failover (of the plain cluster): kill -9 of the leader,
#      time until STRONG calls through the survivors succeed again,
#      restart, BENCH_FAILOVER_TRIALS times;
#   8. writes the generated section of BENCHMARKS.md.
#
# Every process it starts is stopped on exit, whatever happens.
#
# Knobs (environment): BENCH_KEEP (set: keep the work directory with the
# logs and the CPU profiles prof-*.pb.gz), BENCH_ROUNDS (4: even, so that the pairs that swap order every other round run in each order equally often), BENCH_DURATION (5s), BENCH_WARMUP
# (1s), BENCH_FAILOVER_TRIALS (10), BENCH_SCALE_KEYS (10000000; the fsm and
# restart measurements at scale), BENCH_PORT_BASE (27100, below the kernel's ephemeral ports; the servers take
# base+1 to base+89), BENCH_OUT (BENCHMARKS.md), BENCH_PROFILE (1),
# BENCH_ONLY (comma-separated scenario names: compare runs only those; for
# checks, not for BENCHMARKS.md), ETCD
# (/usr/bin/etcd).
set -euo pipefail

# Every flag of ordinal and ordinal-bench reads ORDINAL_<FLAG> when not
# given: an ORDINAL_TLS_CA_FILE left exported from the README's secured
# quick start would secure the connections to the plain servers too. Each
# command here gets its flags explicitly.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^ORDINAL_' || true)

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/ordinal
BENCH_BIN=$ROOT/bin/ordinal-bench
ETCD=${ETCD:-/usr/bin/etcd}
ROUNDS=${BENCH_ROUNDS:-4}
DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-1s}
TRIALS=${BENCH_FAILOVER_TRIALS:-10}
BASE=${BENCH_PORT_BASE:-27100}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
PROFILE=${BENCH_PROFILE:-1}
ONLY=${BENCH_ONLY:-}
SCALE_KEYS=${BENCH_SCALE_KEYS:-10000000}
if [ -n "$ONLY" ] && [ "$(realpath -m "$OUT")" = "$ROOT/BENCHMARKS.md" ]; then
	echo "BENCH_ONLY runs part of the comparison, which BENCHMARKS.md must not quote: set BENCH_OUT to another file" >&2
	exit 1
fi

log() { printf '\n### %s %s\n' "$(date +%T)" "$*" >&2; }

if [ ! -x "$ETCD" ]; then
	echo "etcd missing ($ETCD): apt-get install -y etcd-server" >&2
	exit 1
fi

GRPC=() RAFT=() PPROF=() NODE_PID=() EGRPC=() ERAFT=() EMETRICS=() ENODE_PID=() SGRPC=() SRAFT=() SPPROF=() SNODE_PID=()
FGRPC=() FRAFT=() FPPROF=() FNODE_PID=() QGRPC=() QRAFT=() QNODE_PID=() MGRPC=() MRAFT=() MMETRICS=() MNODE_PID=()
for i in 1 2 3 4 5; do # the plain 5-node cluster
	FGRPC[i]=127.0.0.1:$((BASE + 20 + i))
	FRAFT[i]=127.0.0.1:$((BASE + 25 + i))
	FPPROF[i]=127.0.0.1:$((BASE + 40 + i))
done
for i in 1 2 3; do
	GRPC[i]=127.0.0.1:$((BASE + i))
	RAFT[i]=127.0.0.1:$((BASE + 10 + i))
	PPROF[i]=127.0.0.1:$((BASE + 30 + i))  # --pprof-addr: metrics (and pprof) on
	QGRPC[i]=127.0.0.1:$((BASE + 3 + i))   # the metrics-off cluster (no admin port)
	QRAFT[i]=127.0.0.1:$((BASE + 13 + i))
	EGRPC[i]=127.0.0.1:$((BASE + 50 + i))  # ordinal on etcd: client port
	ERAFT[i]=127.0.0.1:$((BASE + 55 + i))  # ... peer port (forwarded calls)
	EMETRICS[i]=127.0.0.1:$((BASE + 45 + i)) # ... and admin port (--metrics-addr)
	SGRPC[i]=127.0.0.1:$((BASE + 60 + i))  # the secured cluster
	SRAFT[i]=127.0.0.1:$((BASE + 65 + i))
	SPPROF[i]=127.0.0.1:$((BASE + 70 + i))
	MGRPC[i]=127.0.0.1:$((BASE + 80 + i))  # the metrics-on twin of the metrics-off cluster
	MRAFT[i]=127.0.0.1:$((BASE + 83 + i))
	MMETRICS[i]=127.0.0.1:$((BASE + 86 + i))
done
NOOP=127.0.0.1:$((BASE + 20))
NOOP_PPROF=127.0.0.1:$((BASE + 40))
TLS_NOOP=127.0.0.1:$((BASE + 75))
TLS_NOOP_PPROF=127.0.0.1:$((BASE + 76))
ETCD_CLIENT=127.0.0.1:$((BASE + 79))
ETCD_PEER=127.0.0.1:$((BASE + 80))
# --join takes the nodes' peer addresses (--raft-addr); clients, and
# ordinal-bench compare --cluster, their gRPC addresses.
JOIN=${RAFT[1]},${RAFT[2]},${RAFT[3]}
CLUSTER=${GRPC[1]},${GRPC[2]},${GRPC[3]}
SJOIN=${SRAFT[1]},${SRAFT[2]},${SRAFT[3]}
SCLUSTER=${SGRPC[1]},${SGRPC[2]},${SGRPC[3]}
ECLUSTER=${EGRPC[1]},${EGRPC[2]},${EGRPC[3]}
QJOIN=${QRAFT[1]},${QRAFT[2]},${QRAFT[3]}
QCLUSTER=${QGRPC[1]},${QGRPC[2]},${QGRPC[3]}
MJOIN=${MRAFT[1]},${MRAFT[2]},${MRAFT[3]}
MCLUSTER=${MGRPC[1]},${MGRPC[2]},${MGRPC[3]}
FJOIN=$(IFS=,; echo "${FRAFT[*]}")
FCLUSTER=$(IFS=,; echo "${FGRPC[*]}")
# The ordinal-on-etcd nodes' keys, apart from the etcd baseline's
# (/layotto/sequencer|||...) and from ordinal's default prefix.
ESTORE_PREFIX=/bench-ordinal-on-etcd/
ports_in_use=$(ss -Htln | awk '{print $4}')
for addr in "${GRPC[@]}" "${RAFT[@]}" "${PPROF[@]}" "${EGRPC[@]}" "${ERAFT[@]}" "${SGRPC[@]}" "${SRAFT[@]}" "${SPPROF[@]}" \
	"${FGRPC[@]}" "${FRAFT[@]}" "${FPPROF[@]}" "${QGRPC[@]}" "${QRAFT[@]}" "${EMETRICS[@]}" \
	"${MGRPC[@]}" "${MRAFT[@]}" "${MMETRICS[@]}" \
	"$NOOP" "$NOOP_PPROF" "$TLS_NOOP" "$TLS_NOOP_PPROF" "$ETCD_CLIENT" "$ETCD_PEER"; do
	if grep -qx "$addr" <<<"$ports_in_use"; then
		echo "port $addr is in use: set BENCH_PORT_BASE to a free range" >&2
		exit 1
	fi
done

WORK=$(mktemp -d /tmp/ordinal-bench.XXXXXX)
# The certificates live in $WORK/pki; commands that name them run in $WORK
# and say pki/..., as the README's secured quick start does.
PKI=$WORK/pki
NOOP_PID="" TLS_NOOP_PID="" ETCD_PID="" PROF_PID=""

# stop ends a process started here: SIGTERM, then SIGKILL after 5s.
stop() {
	local pid=$1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop "$PROF_PID"
	for i in 1 2 3; do stop "${NODE_PID[i]:-}"; done
	for i in 1 2 3; do stop "${SNODE_PID[i]:-}"; done
	for i in 1 2 3 4 5; do stop "${FNODE_PID[i]:-}"; done
	for i in 1 2 3; do stop "${QNODE_PID[i]:-}"; done
	for i in 1 2 3; do stop "${MNODE_PID[i]:-}"; done
	for i in 1 2 3; do stop "${ENODE_PID[i]:-}"; done
	stop "$NOOP_PID"
	stop "$TLS_NOOP_PID"
	stop "$ETCD_PID"
	if [ "$rc" -ne 0 ]; then
		echo "make bench failed (exit $rc); logs kept in $WORK" >&2
	elif [ -n "${BENCH_KEEP:-}" ]; then
		echo "BENCH_KEEP: logs and profiles kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

START=$(date +%s)

log "build"
make --no-print-directory build build-bench
VERSION=$("$BIN" version)
GITREV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then GITREV="$GITREV + uncommitted changes"; fi
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MACHINE="$(nproc) cores ($CPU), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), shared with other work and noisy: compare ratios from the same run, not absolute numbers across runs"

log "fsm micro-benchmarks (nothing else running)"
FSM_BENCH_CMD="go test -run '^\$' -bench 'Snapshot1M|Restore1M' -benchmem -count=1 ./fsm/"
FSM_MEM_CMD="go test -run 'TestMemoryPerKey' -v -count=1 ./fsm/"
go test -run '^$' -bench 'Snapshot1M|Restore1M' -benchmem -count=1 ./fsm/ | tee "$WORK/fsm-bench.txt"
go test -run 'TestMemoryPerKey' -v -count=1 ./fsm/ | tee "$WORK/fsm-mem.txt"

# The tests at scale fail when a budget is missed; the tables below say
# which, so make bench goes on. Only a run that measured nothing fails it.
log "fsm at scale: $SCALE_KEYS keys (heap, snapshot, restore, a page of a listing)"
FSM_SCALE_CMD="ORDINAL_SCALE_KEYS=$SCALE_KEYS go test -run '^TestKeysAtScale\$' -v -count=1 -timeout 30m ./fsm/"
ORDINAL_SCALE_KEYS=$SCALE_KEYS go test -run '^TestKeysAtScale$' -v -count=1 -timeout 30m ./fsm/ | tee "$WORK/fsm-scale.txt" || true
grep -q 'SCALE keys=' "$WORK/fsm-scale.txt" || { echo "TestKeysAtScale measured nothing" >&2; exit 1; }
log "restart: bin/ordinal serve on a data directory with $SCALE_KEYS keys in its snapshot"
RESTART_CMD="ORDINAL_RESTART_KEYS=$SCALE_KEYS ORDINAL_RESTART_BIN=bin/ordinal go test -run '^TestRestartWithManyKeys\$' -v -count=1 -timeout 60m ./cmd/ordinal/"
ORDINAL_RESTART_KEYS=$SCALE_KEYS ORDINAL_RESTART_BIN=$BIN go test -run '^TestRestartWithManyKeys$' -v -count=1 -timeout 60m ./cmd/ordinal/ |
	tee "$WORK/restart.txt" || true
grep -q 'RESTART keys=' "$WORK/restart.txt" || { echo "TestRestartWithManyKeys measured nothing" >&2; exit 1; }

log "certificates (ordinal tls) in $PKI"
# As the README's secured quick start: a CA each for peers, servers and
# clients; a peer certificate per secured node; one server certificate for
# all the client ports (and the TLS no-op server) on 127.0.0.1; an admin
# client, named in --admin-names, for the leader lookups and members; and
# the load generator's client, "bench", which holds the ids role only.
PKI_CMDS=(
	"tls ca create --dir pki --prefix peer- --name bench-peers"
	"tls ca create --dir pki --prefix server- --name bench-servers"
	"tls ca create --dir pki --prefix client- --name bench-clients"
	"tls cert create --peer --node s1 --dir pki --ca pki/peer-ca.pem --ca-key pki/peer-ca-key.pem"
	"tls cert create --peer --node s2 --dir pki --ca pki/peer-ca.pem --ca-key pki/peer-ca-key.pem"
	"tls cert create --peer --node s3 --dir pki --ca pki/peer-ca.pem --ca-key pki/peer-ca-key.pem"
	"tls cert create --server --name node --dns localhost --ip 127.0.0.1 --dir pki --ca pki/server-ca.pem --ca-key pki/server-ca-key.pem"
	"tls cert create --client --name admin --dir pki --ca pki/client-ca.pem --ca-key pki/client-ca-key.pem"
	"tls cert create --client --name bench --dir pki --ca pki/client-ca.pem --ca-key pki/client-ca-key.pem"
)
for c in "${PKI_CMDS[@]}"; do
	# shellcheck disable=SC2086 # the commands above are split on purpose
	(cd "$WORK" && "$BIN" $c >>"$WORK/pki.log" 2>&1) || { cat "$WORK/pki.log" >&2; echo "ordinal $c failed" >&2; exit 1; }
done
# Connection flags, relative to $WORK: an admin's, and the load
# generator's (ids role).
SADMIN=(--tls-ca-file pki/server-ca.pem --tls-cert-file pki/admin-client.pem --tls-key-file pki/admin-client-key.pem)
SIDS=(--tls-ca-file pki/server-ca.pem --tls-cert-file pki/bench-client.pem --tls-key-file pki/bench-client-key.pem)
# in_work COMMAND...: run COMMAND in $WORK, where the pki/ paths hold (in
# the foreground; a server started in the background needs its own exec,
# so that $! is its PID).
in_work() { (cd "$WORK" && "$@"); }

log "start etcd, the no-op servers, 3 ordinal nodes, 3 without metrics, 3 secured ordinal nodes and a 5-node cluster"
"$ETCD" --name bench --data-dir "$WORK/etcd" \
	--listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
	--listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
	--initial-cluster "bench=http://$ETCD_PEER" >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
"$BENCH_BIN" serve-noop --addr "$NOOP" --pprof-addr "$NOOP_PPROF" >"$WORK/noop.log" 2>&1 &
NOOP_PID=$!
TLS_NOOP_FLAGS="--tls-cert-file pki/node-server.pem --tls-key-file pki/node-server-key.pem --tls-client-ca-file pki/client-ca.pem"
# In $WORK for the pki/ paths; exec keeps $! the server's PID (stopped on
# exit, measured by --pids), not a subshell's.
# shellcheck disable=SC2086
(cd "$WORK" && exec "$BENCH_BIN" serve-noop --addr "$TLS_NOOP" --pprof-addr "$TLS_NOOP_PPROF" $TLS_NOOP_FLAGS >"$WORK/noop-tls.log" 2>&1) &
TLS_NOOP_PID=$!

# --max-keys 0: the many-key rows (fresh-, keys100k-, zipf100k-) make
# about a million keys over three rounds, the fresh- rows a new key per
# call, more than the default limit of 1M would let the last rows make.
# The Snowflake stores of the sf- rows (issue #15): bench-sf with the
# milliseconds layout, bench-sf-batch with 16 sequence bits for the batch
# row's 1000-ID blocks.
SF_STORES=bench-sf:milliseconds,bench-sf-batch
SF_LAYOUT=time=41,worker=6,seq=16,unit=1ms
NODE_ARGS=()
start_node() {
	local i=$1
	"$BIN" serve --node-id "n$i" --data-dir "$WORK/n$i" --grpc-addr "${GRPC[i]}" --raft-addr "${RAFT[i]}" \
		--bootstrap-expect 3 --join "$JOIN" --pprof-addr "${PPROF[i]}" --max-keys 0 \
		--snowflake-stores "$SF_STORES" --snowflake-layout "$SF_LAYOUT" --log-level warn >>"$WORK/n$i.log" 2>&1 &
	NODE_PID[i]=$!
	NODE_ARGS[i]="ordinal serve --node-id n$i --data-dir DIR/n$i --grpc-addr ${GRPC[i]} --raft-addr ${RAFT[i]} --bootstrap-expect 3 --join $JOIN --pprof-addr ${PPROF[i]} --max-keys 0 --snowflake-stores $SF_STORES --snowflake-layout $SF_LAYOUT"
}
for i in 1 2 3; do start_node "$i"; done

# The metrics-off cluster of strong-leader-64-nometrics: the 3-node
# cluster's flags, but --metrics-addr "" (no metrics registry, no admin
# listener) where the 3-node cluster has --pprof-addr (metrics on, and
# profiles).
QNODE_ARGS=()
for i in 1 2 3; do
	"$BIN" serve --node-id "q$i" --data-dir "$WORK/q$i" --grpc-addr "${QGRPC[i]}" --raft-addr "${QRAFT[i]}" \
		--bootstrap-expect 3 --join "$QJOIN" --metrics-addr "" --max-keys 0 --log-level warn >>"$WORK/q$i.log" 2>&1 &
	QNODE_PID[i]=$!
	QNODE_ARGS[i]="ordinal serve --node-id q$i --data-dir DIR/q$i --grpc-addr ${QGRPC[i]} --raft-addr ${QRAFT[i]} --bootstrap-expect 3 --join $QJOIN --metrics-addr \"\" --max-keys 0"
done

# Its metrics-on twin, strong-leader-64-metrics: the same flags with
# --metrics-addr set (metrics on, no profiles), so that the pair compares
# two clusters in the same state.
MNODE_ARGS=()
for i in 1 2 3; do
	"$BIN" serve --node-id "m$i" --data-dir "$WORK/m$i" --grpc-addr "${MGRPC[i]}" --raft-addr "${MRAFT[i]}" \
		--bootstrap-expect 3 --join "$MJOIN" --metrics-addr "${MMETRICS[i]}" --max-keys 0 --log-level warn >>"$WORK/m$i.log" 2>&1 &
	MNODE_PID[i]=$!
	MNODE_ARGS[i]="ordinal serve --node-id m$i --data-dir DIR/m$i --grpc-addr ${MGRPC[i]} --raft-addr ${MRAFT[i]} --bootstrap-expect 3 --join $MJOIN --metrics-addr ${MMETRICS[i]} --max-keys 0"
done

# The plain 5-node cluster of strong-leader-64-5nodes: the 3-node
# cluster's flags, five voters.
FNODE_ARGS=()
for i in 1 2 3 4 5; do
	"$BIN" serve --node-id "f$i" --data-dir "$WORK/f$i" --grpc-addr "${FGRPC[i]}" --raft-addr "${FRAFT[i]}" \
		--bootstrap-expect 5 --join "$FJOIN" --pprof-addr "${FPPROF[i]}" --log-level warn >>"$WORK/f$i.log" 2>&1 &
	FNODE_PID[i]=$!
	FNODE_ARGS[i]="ordinal serve --node-id f$i --data-dir DIR/f$i --grpc-addr ${FGRPC[i]} --raft-addr ${FRAFT[i]} --bootstrap-expect 5 --join $FJOIN --pprof-addr ${FPPROF[i]}"
done

# The secured cluster: the same flags plus the README's production
# security flags. The nodes run in $WORK (for the pki/ paths); exec keeps
# $! the node's PID, not a subshell's.
SNODE_ARGS=()
start_secure_node() {
	local i=$1
	local sec="--peer-cert-file pki/s$i-peer.pem --peer-key-file pki/s$i-peer-key.pem --peer-ca-file pki/peer-ca.pem"
	sec+=" --tls-cert-file pki/node-server.pem --tls-key-file pki/node-server-key.pem --tls-client-ca-file pki/client-ca.pem --admin-names admin"
	# shellcheck disable=SC2086
	(cd "$WORK" && exec "$BIN" serve --node-id "s$i" --data-dir "$WORK/s$i" --grpc-addr "${SGRPC[i]}" --raft-addr "${SRAFT[i]}" \
		--bootstrap-expect 3 --join "$SJOIN" --pprof-addr "${SPPROF[i]}" $sec --log-level warn >>"$WORK/s$i.log" 2>&1) &
	SNODE_PID[i]=$!
	SNODE_ARGS[i]="ordinal serve --node-id s$i --data-dir DIR/s$i --grpc-addr ${SGRPC[i]} --raft-addr ${SRAFT[i]} --bootstrap-expect 3 --join $SJOIN --pprof-addr ${SPPROF[i]} $sec"
}
for i in 1 2 3; do start_secure_node "$i"; done

# wait_for DESCRIPTION SECONDS COMMAND...: retry COMMAND until it succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local deadline=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "$what not ready after ${secs}s" >&2
			return 1
		fi
		sleep 0.2
	done
}
# cluster_healthy ADDR... [-- FLAG...]: asked through any of the nodes
# ADDR (connecting with FLAG...), every node is a reachable voter and one
# leads.
cluster_healthy() {
	local addrs=() m addr
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		addrs+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	for addr in "${addrs[@]}"; do
		m=$(in_work "$BIN" members --addr "$addr" --timeout 2s "$@" 2>/dev/null) || continue
		[ "$(grep -c ' voter ' <<<"$m")" -eq "${VOTERS:-3}" ] && ! grep -q unreachable <<<"$m" && grep -q '\*' <<<"$m"
		return
	done
	return 1
}
for i in 1 2 3; do wait_for "node n$i" 60 "$BIN" health --addr "${GRPC[i]}" --timeout 1s; done
wait_for "cluster" 60 cluster_healthy "${GRPC[@]}"
# health with the load generator's certificate: it must hold the ids role.
for i in 1 2 3; do wait_for "secured node s$i" 60 in_work "$BIN" health --addr "${SGRPC[i]}" --timeout 1s "${SIDS[@]}"; done
wait_for "secured cluster" 60 cluster_healthy "${SGRPC[@]}" -- "${SADMIN[@]}"
for i in 1 2 3 4 5; do wait_for "5-node cluster's node f$i" 60 "$BIN" health --addr "${FGRPC[i]}" --timeout 1s; done
VOTERS=5 wait_for "5-node cluster" 60 cluster_healthy "${FGRPC[@]}"
for i in 1 2 3; do wait_for "metrics-off node q$i" 60 "$BIN" health --addr "${QGRPC[i]}" --timeout 1s; done
wait_for "metrics-off cluster" 60 cluster_healthy "${QGRPC[@]}"
for i in 1 2 3; do wait_for "metrics-on twin node m$i" 60 "$BIN" health --addr "${MGRPC[i]}" --timeout 1s; done
wait_for "metrics-on twin cluster" 60 cluster_healthy "${MGRPC[@]}"
wait_for "no-op server" 30 "$BIN" health --addr "$NOOP" --timeout 1s
wait_for "TLS no-op server" 30 in_work "$BIN" health --addr "$TLS_NOOP" --timeout 1s "${SIDS[@]}"
wait_for "etcd" 60 "$BENCH_BIN" run --backend etcd --targets "$ETCD_CLIENT" --concurrency 1 --duration 100ms --warmup 0
"$BIN" members --addr "${GRPC[1]}"
in_work "$BIN" members --addr "${SGRPC[1]}" "${SADMIN[@]}"

# Started once etcd serves, so that they campaign at once. They keep no
# state of their own: no data directory.
log "start 3 ordinal nodes on etcd (--backend etcd)"
# Each has a peer port too (forwarded STRONG calls), an admin port
# (metrics on, as in production) and a node ID, which its election value
# names: all must differ between nodes on one host.
ENODE_ARGS=()
for i in 1 2 3; do
	"$BIN" serve --backend etcd --etcd-endpoints "$ETCD_CLIENT" --etcd-prefix "$ESTORE_PREFIX" --node-id "e$i" \
		--grpc-addr "${EGRPC[i]}" --raft-addr "${ERAFT[i]}" --metrics-addr "${EMETRICS[i]}" --log-level warn >>"$WORK/e$i.log" 2>&1 &
	ENODE_PID[i]=$!
	ENODE_ARGS[i]="ordinal serve --backend etcd --etcd-endpoints $ETCD_CLIENT --etcd-prefix $ESTORE_PREFIX --node-id e$i --grpc-addr ${EGRPC[i]} --raft-addr ${ERAFT[i]} --metrics-addr ${EMETRICS[i]}"
done
# health is SERVING once a node reaches etcd, holds its session and knows
# the elected node.
for i in 1 2 3; do wait_for "ordinal-on-etcd node e$i" 60 "$BIN" health --addr "${EGRPC[i]}" --timeout 1s; done

# What the servers cost while nothing loads them: during every row, all
# servers but the one or three called sit idle on the same two cores.
IDLE_SECS=5
log "idle CPU of the servers over ${IDLE_SECS}s"
# cpu_ms PID...: user + system CPU time of the processes, in ms.
cpu_ms() {
	local pid ticks=0 hz
	hz=$(getconf CLK_TCK)
	for pid in "$@"; do
		# Fields 14 and 15 (utime, stime), counted after the command
		# name, which is in parentheses.
		ticks=$((ticks + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
	done
	echo $((ticks * 1000 / hz))
}
IDLE_GROUPS=("plain cluster + no-op:${NODE_PID[1]} ${NODE_PID[2]} ${NODE_PID[3]} $NOOP_PID"
	"secured cluster + TLS no-op:${SNODE_PID[1]} ${SNODE_PID[2]} ${SNODE_PID[3]} $TLS_NOOP_PID"
	"etcd + ordinal-on-etcd nodes:$ETCD_PID ${ENODE_PID[1]} ${ENODE_PID[2]} ${ENODE_PID[3]}"
	"5-node cluster:${FNODE_PID[*]}"
	"metrics-off cluster:${QNODE_PID[*]}"
	"metrics-on twin cluster:${MNODE_PID[*]}")
IDLE_BEFORE=()
for g in "${IDLE_GROUPS[@]}"; do IDLE_BEFORE+=("$(cpu_ms ${g#*:})"); done
sleep "$IDLE_SECS"
IDLE_REPORT=""
for k in "${!IDLE_GROUPS[@]}"; do
	g=${IDLE_GROUPS[k]}
	ms=$(($(cpu_ms ${g#*:}) - IDLE_BEFORE[k]))
	IDLE_REPORT+="${IDLE_REPORT:+; }${g%%:*}: $((ms / IDLE_SECS)) ms/s"
done
echo "idle CPU, per second of wall time (of $(($(nproc) * 1000)) ms/s on $(nproc) cores): $IDLE_REPORT" >&2

log "compare: $ROUNDS rounds of every scenario, $DURATION each after $WARMUP warm-up"
TLS_COMPARE_ARGS=(--tls-cluster "$SCLUSTER" --tls-noop "$TLS_NOOP" --tls-cluster-ca-file pki/server-ca.pem
	--tls-cluster-cert-file pki/bench-client.pem --tls-cluster-key-file pki/bench-client-key.pem
	--tls-cluster-admin-cert-file pki/admin-client.pem --tls-cluster-admin-key-file pki/admin-client-key.pem)
COMPARE_CMD="ordinal-bench compare --cluster $CLUSTER --noop $NOOP --etcd $ETCD_CLIENT --etcd-cluster $ECLUSTER --etcd-cluster-prefix $ESTORE_PREFIX ${TLS_COMPARE_ARGS[*]} --cluster5 $FCLUSTER --cluster-nometrics $QCLUSTER --cluster-metrics $MCLUSTER ${ONLY:+--only $ONLY }--rounds $ROUNDS --duration $DURATION --warmup $WARMUP --pids <ADDR=PID of each server>"
PIDS="${GRPC[1]}=${NODE_PID[1]},${GRPC[2]}=${NODE_PID[2]},${GRPC[3]}=${NODE_PID[3]},$NOOP=$NOOP_PID,$ETCD_CLIENT=$ETCD_PID"
PIDS+=",${EGRPC[1]}=${ENODE_PID[1]},${EGRPC[2]}=${ENODE_PID[2]},${EGRPC[3]}=${ENODE_PID[3]}"
PIDS+=",${SGRPC[1]}=${SNODE_PID[1]},${SGRPC[2]}=${SNODE_PID[2]},${SGRPC[3]}=${SNODE_PID[3]},$TLS_NOOP=$TLS_NOOP_PID"
for i in 1 2 3 4 5; do PIDS+=",${FGRPC[i]}=${FNODE_PID[i]}"; done
for i in 1 2 3; do PIDS+=",${QGRPC[i]}=${QNODE_PID[i]}"; done
for i in 1 2 3; do PIDS+=",${MGRPC[i]}=${MNODE_PID[i]}"; done
COMPARE_RC=0
in_work "$BENCH_BIN" compare --cluster "$CLUSTER" --noop "$NOOP" --etcd "$ETCD_CLIENT" \
	--etcd-cluster "$ECLUSTER" --etcd-cluster-prefix "$ESTORE_PREFIX" "${TLS_COMPARE_ARGS[@]}" --cluster5 "$FCLUSTER" --cluster-nometrics "$QCLUSTER" --cluster-metrics "$MCLUSTER" \
	--rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --out "$WORK/compare.md" \
	--machine "$MACHINE" --command "$COMPARE_CMD" --pids "$PIDS" ${ONLY:+--only "$ONLY"} |
	tee "$WORK/compare.log" || COMPARE_RC=$?
[ -s "$WORK/compare.md" ] || { echo "compare wrote no report" >&2; exit 1; }

# leader_index PREFIX ADDR... [-- FLAG...]: the number of the node that
# leads (its ID is PREFIX and the number), asked through any ADDR.
leader_index() {
	local prefix=$1 addrs=() line id addr
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		addrs+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	for addr in "${addrs[@]}"; do
		if line=$(in_work "$BIN" leader --addr "$addr" --timeout 2s "$@" 2>/dev/null); then
			id=${line%% *}
			echo "${id#"$prefix"}"
			return 0
		fi
	done
	return 1
}

# profile NAME PPROF-ADDR BENCH-ARGS...: a 6s CPU profile (Go pprof) of the
# process serving /debug/pprof at PPROF-ADDR while `ordinal-bench run
# BENCH-ARGS` runs; writes $WORK/prof-NAME.{txt,pb.gz,top,cum}.
PROFILES=()
profile() {
	local name=$1 addr=$2
	shift 2
	log "CPU profile of $name during: ordinal-bench run $*"
	go tool pprof -seconds 6 -proto -output "$WORK/prof-$name.pb.gz" "http://$addr/debug/pprof/profile" \
		>"$WORK/prof-$name.log" 2>&1 &
	PROF_PID=$!
	sleep 0.2 # the profile starts with the warm-up
	{
		echo "go tool pprof -seconds 6 -proto -output prof-$name.pb.gz http://$addr/debug/pprof/profile & ordinal-bench run $*"
		in_work "$BENCH_BIN" run "$@" --label "profiled-$name"
	} | tee "$WORK/prof-$name.txt"
	wait "$PROF_PID" || { cat "$WORK/prof-$name.log" >&2; PROF_PID=""; return 0; }
	PROF_PID=""
	go tool pprof -top -nodecount=2000 "$WORK/prof-$name.pb.gz" 2>/dev/null | sed 's/[[:space:]]*$//' >"$WORK/prof-$name.top" || true
	go tool pprof -top -cum -nodecount=400 "$WORK/prof-$name.pb.gz" 2>/dev/null | sed 's/[[:space:]]*$//' >"$WORK/prof-$name.cum" || true
	PROFILES+=("$name")
}
if [ "$PROFILE" = 1 ]; then
	L=$(leader_index n "${GRPC[@]}")
	profile leader-strong "${PPROF[L]}" --mode strong --targets "${GRPC[L]}" --concurrency 64 --duration 5s --warmup 1s --key bench-strong
	profile leader-weak "${PPROF[L]}" --mode weak --targets "${GRPC[L]}" --concurrency 64 --duration 5s --warmup 1s --key bench-weak
	profile leader-fresh-strong "${PPROF[L]}" --mode strong --key-dist fresh --targets "${GRPC[L]}" --concurrency 64 --duration 5s --warmup 1s --key bench-fresh-prof
	F=$(( L % 3 + 1 )) # a follower, while the same load runs on the leader
	profile follower-fresh-strong "${PPROF[F]}" --mode strong --key-dist fresh --targets "${GRPC[L]}" --concurrency 64 --duration 5s --warmup 1s --key bench-fresh-prof-f
	L=$(leader_index s "${SGRPC[@]}" -- "${SADMIN[@]}")
	profile tls-leader-strong "${SPPROF[L]}" "${SIDS[@]}" --mode strong --targets "${SGRPC[L]}" --concurrency 64 --duration 5s --warmup 1s --key bench-strong
	profile noop "$NOOP_PPROF" --mode strong --targets "$NOOP" --concurrency 64 --duration 5s --warmup 1s --key bench-unary
fi

log "failover: $TRIALS trials of kill -9 of the leader"
: >"$WORK/failover.txt"
FAILOVER_RC=0
for t in $(seq "$TRIALS"); do
	wait_for "cluster before failover trial $t" 60 cluster_healthy "${GRPC[@]}"
	L=$(leader_index n "${GRPC[@]}")
	SURVIVORS=()
	for i in 1 2 3; do [ "$i" = "$L" ] || SURVIVORS+=("${GRPC[i]}"); done
	echo "trial $t: leader n$L (pid ${NODE_PID[L]}), survivors ${SURVIVORS[*]}" >&2
	if ! "$BENCH_BIN" failover --kill-pid "${NODE_PID[L]}" --targets "$(IFS=,; echo "${SURVIVORS[*]}")" --key failover \
		>"$WORK/failover-$t.txt" 2>&1; then
		FAILOVER_RC=1
		echo "FAILED trial $t: $(tail -1 "$WORK/failover-$t.txt")" >>"$WORK/failover-failed.txt"
	fi
	cat "$WORK/failover-$t.txt" | tee -a "$WORK/failover.txt"
	{ wait "${NODE_PID[L]}"; } 2>/dev/null || true # quiet: bash reports the SIGKILL
	start_node "$L"
	wait_for "restarted n$L" 60 "$BIN" health --addr "${GRPC[L]}" --timeout 1s
done
wait_for "cluster after failover" 60 cluster_healthy "${GRPC[@]}"

log "write $OUT"
ELAPSED=$(($(date +%s) - START))
GEN=$WORK/generated.md
{
	echo "<!-- BEGIN GENERATED by make bench (bench/run.sh): edits between these markers are overwritten -->"
	echo
	echo "## Results of the last \`make bench\`"
	echo
	echo "- when: $(date -u '+%Y-%m-%d %H:%M UTC'), took ${ELAPSED}s in all"
	echo "- code: $VERSION, commit $GITREV"
	echo "- machine: $MACHINE"
	echo "- servers, all on loopback on the same machine as the load generator: 3 ordinal nodes"
	echo "  (\`${NODE_ARGS[1]}\`, likewise n2 and n3, log level warn; metrics on: --pprof-addr is"
	echo "  --metrics-addr with --pprof, Prometheus /metrics and /debug/pprof on one admin listener, not scraped during the"
	echo "  runs), the no-op server"
	echo "  (\`ordinal-bench serve-noop --addr $NOOP\`), etcd $("$ETCD" --version | awk '/etcd Version/{print $3}')"
	echo "  (\`etcd --data-dir DIR/etcd\`, single member, defaults otherwise), and 3 ordinal nodes on that etcd for the"
	echo "  etcdstore- rows (\`${ENODE_ARGS[1]}\`, likewise e2 and e3, log level warn)"
	echo "- for the quorum-size row (strong-leader-64-5nodes), in the same run: a plain 5-node cluster"
	echo "  (\`${FNODE_ARGS[1]}\`, likewise f2 to f5, log level warn)"
	echo "- for the metrics pair (issue #13 target strong-leader-64-metrics / strong-leader-64-nometrics ≥ 0.95), in the"
	echo "  same run: 3 more ordinal nodes with metrics off (\`${QNODE_ARGS[1]}\`, likewise q2 and q3, log level warn)"
	echo "  and 3 started alike with metrics on (\`${MNODE_ARGS[1]}\`, likewise m2 and m3), each cluster holding only the"
	echo "  pair's key"
	echo "- for the multi-address rows (issue #14: strong-multi-64, the twin of strong-leader-64 with the target"
	echo "  strong-multi-64 / strong-leader-64 ≥ 0.9 (same run), and weak-prefetch-64, target ≥ 20M ids/s), no servers of"
	echo "  their own: the 64 callers share one client made with the 3 ordinal nodes' addresses (\`client.New(\"$CLUSTER\")\`,"
	echo "  \`ordinal-bench run --multi-address\`), which sends STRONG calls to the node that says it leads; weak-prefetch-64's client"
	echo "  adds \`client.WithWeakPrefetch(100000)\` (\`--weak-prefetch 100000\`) and is verified without a record per call:"
	echo "  each caller's IDs increasing, every ID unique (set in a bitmap after the run), latencies of 1 call in 64"
	echo "- for the mTLS rows (tls-, noop-tls-), in the same run: 3 ordinal nodes secured as the README's"
	echo "  production setup (\`${SNODE_ARGS[1]}\`, likewise s2 and s3, log level warn) and the no-op server over the"
	echo "  same mutual TLS (\`ordinal-bench serve-noop --addr $TLS_NOOP $TLS_NOOP_FLAGS\`); the load generator"
	echo "  presents pki/bench-client.pem (ids role only), the leader lookups pki/admin-client.pem (in --admin-names);"
	echo "  the certificates, made with the binary before any server started, in the run's temp directory:"
	echo
	echo '  ```sh'
	for c in "${PKI_CMDS[@]}"; do echo "  ordinal $c"; done
	echo '  ```'
	echo
	echo "- idle CPU of the servers, per second, measured over ${IDLE_SECS}s with nothing loading them, after start-up and"
	echo "  before the comparison (during each row, every server but the one to three it loads idles like this; of"
	echo "  $(($(nproc) * 1000)) ms/s on $(nproc) cores): $IDLE_REPORT"
	echo
	echo "### Throughput and latency"
	echo
	cat "$WORK/compare.md"
	echo
	echo "### State machine: snapshot, restore, memory (1M keys)"
	echo
	echo "Commands: \`$FSM_BENCH_CMD\` and \`$FSM_MEM_CMD\`, run before any server was started."
	echo
	echo "| measurement | result | target | met? |"
	echo "|---|---:|---|---|"
	awk '/^BenchmarkSnapshot1M/ {s=$3/1e9; printf "| Snapshot + Persist of 1M keys | %.2f s/op (%.0f MB allocated/op) | ≤ 2 s | %s |\n", s, $5/1e6, (s<=2?"met":"**missed**")}
	     /^BenchmarkRestore1M/  {s=$3/1e9; printf "| Restore of 1M keys | %.2f s/op (%s MB/s, %.0f MB allocated/op) | ≤ 2 s | %s |\n", s, $5, $7/1e6, (s<=2?"met":"**missed**")}' "$WORK/fsm-bench.txt"
	grep -o '[0-9]* keys: [0-9.]* bytes of heap per key' "$WORK/fsm-mem.txt" | head -1 |
		awk '{printf "| heap per key (200k keys via Apply) | %s B | < 100 B (DESIGN: ~64) | %s |\n", $3, ($3<100?"met":"**missed**")}'
	grep -o '[0-9]* restored keys: [0-9.]* bytes of heap per key' "$WORK/fsm-mem.txt" | head -1 |
		awk '{printf "| heap per key (200k keys via Restore) | %s B | < 100 B | %s |\n", $4, ($4<100?"met":"**missed**")}'
	echo
	echo '```'
	grep -E '^(Benchmark|cpu:)' "$WORK/fsm-bench.txt"
	echo '```'
	echo
	echo "### $SCALE_KEYS keys: memory, snapshot, restore, restart (issue #11)"
	echo
	echo "Commands: \`$FSM_SCALE_CMD\` and \`$RESTART_CMD\`, run before any server was started. The"
	echo "first builds the keys through \`Apply\` (1000 floors per entry), the second commits them through a node's"
	echo "Raft log (4096 reservations per entry), snapshots it, stops it, and times \`ordinal serve\` on that data"
	echo "directory from process start to gRPC health SERVING."
	echo
	echo "| measurement | result | target | met? |"
	echo "|---|---:|---|---|"
	grep -o 'SCALE .*' "$WORK/fsm-scale.txt" | head -1 | awk '{for(i=2;i<=NF;i++){split($i,kv,"="); v[kv[1]]=kv[2]}
		printf "| heap per key, keys created by Apply | %s B | ≤ 100 B | %s |\n", v["heap_per_key_apply"], (v["heap_per_key_apply"]+0<=100?"met":"**missed**")
		printf "| heap per key, keys loaded by Restore | %s B | ≤ 100 B | %s |\n", v["heap_per_key_restore"], (v["heap_per_key_restore"]+0<=100?"met":"**missed**")
		printf "| Snapshot() (holds up Apply) | %.2f s | none set | — |\n", v["capture_s"]
		printf "| Snapshot + Persist | %.2f s (%s MB) | ≤ 10 s | %s |\n", v["snapshot_s"], v["snapshot_mb"], (v["snapshot_s"]+0<=10?"met":"**missed**")
		printf "| Restore | %.2f s | ≤ 10 s | %s |\n", v["restore_s"], (v["restore_s"]+0<=10?"met":"**missed**")
		printf "| a page of 1000 keys: first / middle / with a prefix | %s / %s / %s ms | none set | — |\n", v["page_first_ms"], v["page_middle_ms"], v["page_prefix_ms"]}'
	grep -o 'RESTART .*' "$WORK/restart.txt" | head -1 | awk '{for(i=2;i<=NF;i++){split($i,kv,"="); v[kv[1]]=kv[2]}
		printf "| restart: ordinal serve from process start to serving | %.2f s | ≤ 10 s | %s |\n", v["serving_s"], (v["serving_s"]+0<=10?"met":"**missed**")
		printf "| … from process start: data directory checked; snapshot restore started; done; elected; ready | %s; %s; %s; %s; %s s | none set | — |\n", v["checked_s"], v["restore_from_s"], v["restored_s"], v["elected_s"], v["ready_s"]
		printf "| its memory once serving (RSS; peak) | %s MB; %s MB | none set | — |\n", v["rss_mb"], v["hwm_mb"]
		printf "| its data directory: snapshot; raft.db | %s MB; %s MB | none set | — |\n", v["snapshot_mb"], v["raftdb_mb"]}'
	echo
	echo '```'
	grep -E '(SCALE|RESTART|budget)' "$WORK/fsm-scale.txt" "$WORK/restart.txt" | sed 's/^[^:]*: *//'
	echo '```'
	echo
	echo "### Failover after kill -9 of the leader"
	echo
	echo "Command per trial: \`ordinal-bench failover --kill-pid <leader pid> --targets <the two survivors> --key failover\`"
	echo "(leader found with \`ordinal leader\`; after each trial the killed node is restarted with its flags and data"
	echo "and the next trial waits until all three are reachable voters again). The clock starts at the SIGKILL; a STRONG"
	echo "call goes to a survivor every 10 ms, alternating, each with a 1 s deadline and no client retry."
	echo
	echo "| trial | first STRONG success | success through both survivors | attempts | errors while failing over |"
	echo "|---:|---:|---:|---:|---|"
	awk '/^RESULT label=failover/ {n++; for(i=1;i<=NF;i++){split($i,kv,"="); v[kv[1]]=substr($i,length(kv[1])+2)}
	     printf "| %d | %d ms | %d ms | %s | %s |\n", n, v["first_ok_ms"], v["all_ok_ms"], v["attempts"], v["errors"]}' "$WORK/failover.txt"
	echo
	if [ -s "$WORK/failover-failed.txt" ]; then
		sed 's/^/- **/; s/$/**/' "$WORK/failover-failed.txt"
		echo
	fi
	awk '/^RESULT label=failover/ {for(i=1;i<=NF;i++){split($i,kv,"="); if(kv[1]=="first_ok_ms"&&kv[2]+0>w)w=kv[2]+0; if(kv[1]=="all_ok_ms"&&kv[2]+0>a)a=kv[2]+0}; n++}
	     END {printf "Worst of %d trials: **%d ms** until STRONG calls succeed again (target ≤ 2000 ms: %s); %d ms until they succeed through both survivors.\n", n, w, (w<=2000?"met":"**missed** by " (w-2000) " ms"), a}' "$WORK/failover.txt"
	if ((${#PROFILES[@]})); then
		echo
		echo "### CPU profiles (Go pprof)"
		echo
		echo "Where a server's CPU goes during a row, for the \"why the misses\" analysis: each profile is 6 s of"
		echo "\`go tool pprof -seconds 6\` while the row below runs (the profiles themselves, \`prof-NAME.pb.gz\`,"
		echo "stay in the run's work directory with BENCH_KEEP=1; they are not copied here). The share of the"
		echo "profiled process's CPU, cumulative, of the frames that tell the paths apart (metrics: the flat time of"
		echo "the Prometheus client, the gRPC provider and go-metrics, summed; their allocations show under GC):"
		echo
		echo "| profile | the run it profiled | gRPC server | allocator | Raft (leader loop, replication, FSM) | log writes (bbolt) | fdatasync | GC | metrics |"
		echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
		for name in "${PROFILES[@]}"; do
			local_cmd=$(head -1 "$WORK/prof-$name.txt" | sed 's/^go tool pprof.*& //')
			ids=$(awk '/^  ids\/s/ {print $2}' "$WORK/prof-$name.txt")
			share() { awk -v pat="$1" '$6 ~ pat && $5+0 > best {best=$5+0} END {printf "%.0f%%", best}' "$WORK/prof-$name.cum"; }
			echo "| $name | \`$local_cmd\`: $ids ids/s | $(share '^google.golang.org/grpc.\\(\\*Server\\).handleStream$') | $(share '^github.com/ordinal-dev/ordinal/alloc.\\(\\*Allocator\\).Next$') | $(share '^github.com/hashicorp/raft.\\(\\*raftState\\).goFunc.func1$') | $(share 'BoltStore\\).StoreLogs$') | $(share '^go.etcd.io/bbolt.fdatasync$') | $(share '^runtime.gcBgMarkWorker$') | $(awk '$6 ~ /prometheus|go-metrics/ {s+=$2+0} END {printf "%.1f%%", s}' "$WORK/prof-$name.top") |"
		done
	fi
	echo "<!-- END GENERATED -->"
} >"$GEN"

if [ -f "$OUT" ] && grep -q '^<!-- BEGIN GENERATED' "$OUT" && grep -q '^<!-- END GENERATED' "$OUT"; then
	awk -v gen="$GEN" '
		/^<!-- BEGIN GENERATED/ { while ((getline line < gen) > 0) print line; skip = 1; next }
		/^<!-- END GENERATED/   { skip = 0; next }
		!skip { print }' "$OUT" >"$WORK/out.md"
	cp "$WORK/out.md" "$OUT"
else
	{
		[ -f "$OUT" ] && cat "$OUT" && echo
		cat "$GEN"
	} >"$WORK/out.md"
	cp "$WORK/out.md" "$OUT"
fi
echo "wrote $OUT (make bench took ${ELAPSED}s)" >&2
if [ "$COMPARE_RC" -ne 0 ] || [ "$FAILOVER_RC" -ne 0 ]; then
	echo "a run or a verification FAILED (compare exit $COMPARE_RC, failover $FAILOVER_RC): see $OUT" >&2
	exit 1
fi
