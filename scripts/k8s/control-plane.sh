#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for relab's API tests: Debian's
# etcd, plus kube-apiserver and kube-controller-manager v1.20.2 built by
# scripts/k8s/build.sh. No kubelet, no nodes: objects are stored, validated,
# defaulted, garbage-collected and reconciled by the controllers (Deployments
# get ReplicaSets, Jobs get Pods that stay Pending), nothing runs.
#
#   bash scripts/k8s/control-plane.sh start    # idempotent; prints `export KUBECONFIG=...`
#   bash scripts/k8s/control-plane.sh status   # exit 0 when running and ready
#   bash scripts/k8s/control-plane.sh stop     # stops exactly what start started, removes the run dir
#
#   eval "$(bash scripts/k8s/control-plane.sh start)"   # then: cargo test -p relab-operator --test apiserver
#
# Environment:
#   RELAB_K8S_DIR    run dir (default /tmp/relab-k8s): certs, tokens, kubeconfigs, etcd data, logs, PID files
#   RELAB_CACHE      cache of scripts/k8s/build.sh (default /var/cache/relab); binaries in $RELAB_CACHE/k8s/bin
#   RELAB_K8S_NO_BUILD=1   fail instead of running build.sh when the binaries are missing
#   RELAB_K8S_TIMEOUT      seconds to wait for each component (default 90)
set -euo pipefail

RUN="$(realpath -m "${RELAB_K8S_DIR:-/tmp/relab-k8s}")"
BIN="${RELAB_CACHE:-/var/cache/relab}/k8s/bin"
TIMEOUT="${RELAB_K8S_TIMEOUT:-90}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MARKER="$RUN/.relab-k8s"
# stop order (reverse of start order)
COMPONENTS=(kube-controller-manager kube-apiserver etcd)

say() { printf '[k8s] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# now, since, pid_of, running, alive, tail_log, wait_for, launch, stop_pid:
# shared with the e2e cluster (tests/e2e/cluster/cluster.sh)
PROC_DIR="$RUN" LAUNCH_WRAP=()
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=pki.sh
. "$HERE/pki.sh"



load_env() { [ -f "$RUN/env" ] && . "$RUN/env"; }

apiserver_get() { # path -> body on stdout; fails on non-2xx
  curl -sS --fail --max-time 5 --cacert "$RUN/pki/ca.crt" \
    -H "Authorization: Bearer $(cat "$RUN/admin.token")" "https://127.0.0.1:$APISERVER_PORT$1"
}

apiserver_ready() { [ "$(apiserver_get /readyz 2>/dev/null)" = ok ]; }
etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }
# kube-controller-manager serves /healthz on its own self-signed cert
kcm_healthy() { [ "$(curl -sk --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz")" = ok ]; }

ready() {
  load_env || return 1
  alive etcd && alive kube-apiserver && alive kube-controller-manager || return 1
  apiserver_ready
}


# free_port VAR: sets VAR to a TCP port nobody uses (random, above the usual
# defaults), distinct from the ones picked before.
TAKEN=""
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    case " $TAKEN " in *" $p "*) continue ;; esac
    if ! ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .; then
      TAKEN="$TAKEN $p"
      printf -v "$1" '%s' "$p"
      return
    fi
  done
  die "no free port found"
}



# ------------------------------------------------------------------- certs
gen_pki() {
  local d="$RUN/pki"
  pki_ca "$d" relab-k8s-ca
  pki_cert "$d" apiserver /CN=kube-apiserver serverAuth "IP:127.0.0.1,IP:10.0.0.1,$PKI_APISERVER_DNS"
  pki_service_accounts "$d"
}

# kubeconfig FILE USER TOKEN: the loopback API server as USER.
kubeconfig() {
  write_kubeconfig "$1" "https://127.0.0.1:$APISERVER_PORT" "$RUN/pki/ca.crt" relab "$2" "$3"
}

# -------------------------------------------------------------------- stop

stop_all() {
  local c
  for c in "${COMPONENTS[@]}"; do
    alive "$c" && stop_pid "$c" "$(pid_of "$c")"
  done
  return 0
}

cmd_stop() {
  local t0
  t0=$(now)
  if [ ! -e "$RUN" ]; then
    say "not running (no $RUN)"
    return 0
  fi
  [ -f "$MARKER" ] || die "$RUN exists but was not created by this script (no $MARKER): not touching it"
  stop_all
  rm -rf "$RUN"
  say "removed $RUN; stop took $(since "$t0") s"
}

# ------------------------------------------------------------------ status
cmd_status() {
  if [ ! -f "$MARKER" ]; then
    say "not running (no $RUN)"
    return 3
  fi
  load_env || true
  local c rc=0
  for c in etcd kube-apiserver kube-controller-manager; do
    if alive "$c"; then
      say "$c: running, pid $(pid_of "$c"), rss $(awk '/VmRSS/{printf "%.0f MiB", $2/1024}' "/proc/$(pid_of "$c")/status")"
    else
      say "$c: NOT running"
      rc=1
    fi
  done
  if [ "$rc" = 0 ] && [ "$(apiserver_get /readyz 2>/dev/null)" = ok ]; then
    say "apiserver https://127.0.0.1:${APISERVER_PORT:-?} ready; etcd http://127.0.0.1:${ETCD_CLIENT_PORT:-?}"
    echo "export KUBECONFIG=$RUN/kubeconfig"
  else
    say "apiserver not ready"
    rc=1
  fi
  return "$rc"
}

# ------------------------------------------------------------------- start
cmd_start() {
  local t0
  t0=$(now)
  if [ -f "$MARKER" ]; then
    if ready; then
      say "already running (apiserver https://127.0.0.1:$APISERVER_PORT); nothing to do"
      echo "export KUBECONFIG=$RUN/kubeconfig"
      return 0
    fi
    say "stale run dir $RUN (a component is down): cleaning it up first"
    cmd_stop
  elif [ -e "$RUN" ] && [ -n "$(ls -A "$RUN" 2>/dev/null)" ]; then
    die "$RUN exists and is not a relab control-plane dir; set RELAB_K8S_DIR or remove it"
  fi

  # build.sh is a no-op (well under a second) when the binaries are cached
  # and built by the current recipe; otherwise it builds them (minutes, once).
  if [ -n "${RELAB_K8S_NO_BUILD:-}" ]; then
    local b
    for b in kube-apiserver kube-controller-manager; do
      [ -x "$BIN/$b" ] || die "$BIN/$b missing: run bash scripts/k8s/build.sh"
    done
  else
    bash "$HERE/build.sh"
  fi
  command -v etcd >/dev/null || die "etcd missing: run bash scripts/k8s/build.sh (installs etcd-server)"
  command -v openssl >/dev/null && command -v curl >/dev/null || die "openssl and curl are needed"

  mkdir -p "$RUN"
  chmod 700 "$RUN"
  touch "$MARKER"
  # From here on, a failure tears down whatever was started.
  trap 'rc=$?; if [ $rc -ne 0 ]; then say "start failed: stopping what was started"; stop_all; rm -rf "$RUN"; fi' EXIT

  free_port ETCD_CLIENT_PORT
  free_port ETCD_PEER_PORT
  free_port APISERVER_PORT
  free_port KCM_PORT
  cat > "$RUN/env" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
EOF

  gen_pki
  local admin_token kcm_token
  admin_token=$(openssl rand -hex 24)
  kcm_token=$(openssl rand -hex 24)
  echo "$admin_token" > "$RUN/admin.token"
  # token,user,uid,"groups"
  cat > "$RUN/tokens.csv" <<EOF
$admin_token,relab-admin,relab-admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager,""
EOF
  chmod 600 "$RUN/tokens.csv" "$RUN/admin.token"
  kubeconfig "$RUN/kubeconfig" relab-admin "$admin_token"
  kubeconfig "$RUN/controller-manager.kubeconfig" system:kube-controller-manager "$kcm_token"
  say "pki, tokens and kubeconfigs in $RUN ($(since "$t0") s)"

  # ---- etcd (Debian's etcd-server; ETCD_* variables of the caller ignored)
  local t
  t=$(now)
  local unset_etcd=() v
  for v in $(compgen -e | grep '^ETCD_' || true); do unset_etcd+=(-u "$v"); done
  launch etcd env "${unset_etcd[@]}" "$(command -v etcd)" \
    --name relab --data-dir "$RUN/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "relab=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --quota-backend-bytes $((512 * 1024 * 1024)) \
    --logger zap --log-level warn
  wait_for etcd "etcd /health" etcd_healthy
  say "etcd ready on 127.0.0.1:$ETCD_CLIENT_PORT (pid $(pid_of etcd), $(since "$t") s)"

  # ---- kube-apiserver
  # --endpoint-reconciler-type=none: the `kubernetes` Service (10.0.0.1) is
  # still created, but its Endpoints are not, since 127.0.0.1 is refused as an
  # endpoint ("may not be in the loopback range") and would be logged every
  # 10 s. Nothing here runs pods that would use them.
  t=$(now)
  launch kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address=127.0.0.1 \
    --bind-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --insecure-port=0 \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --tls-cert-file="$RUN/pki/apiserver.crt" \
    --tls-private-key-file="$RUN/pki/apiserver.key" \
    --client-ca-file="$RUN/pki/ca.crt" \
    --token-auth-file="$RUN/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-key-file="$RUN/pki/sa.pub" \
    --service-account-signing-key-file="$RUN/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false \
    --v=1
  wait_for kube-apiserver "kube-apiserver /readyz" apiserver_ready
  say "kube-apiserver ready on https://127.0.0.1:$APISERVER_PORT (pid $(pid_of kube-apiserver), $(since "$t") s)"

  # ---- kube-controller-manager
  # --flex-volume-plugin-dir: its default (/usr/libexec/kubernetes/...) would
  # be created on the host. --port=0: no insecure port (10252 by default).
  # --controllers='*': everything on by default, among them garbagecollector,
  # namespace, serviceaccount(-token), deployment, replicaset, job, cronjob.
  t=$(now)
  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --port=0 \
    --cert-dir="$RUN/controller-manager-certs" \
    --flex-volume-plugin-dir="$RUN/flexvolume" \
    --use-service-account-credentials=true \
    --root-ca-file="$RUN/pki/ca.crt" \
    --service-account-private-key-file="$RUN/pki/sa.key" \
    --cluster-signing-cert-file="$RUN/pki/ca.crt" \
    --cluster-signing-key-file="$RUN/pki/ca.key" \
    --service-cluster-ip-range=10.0.0.0/16 \
    --leader-elect=false \
    --controllers='*' \
    --profiling=false \
    --v=1
  wait_for kube-controller-manager "kube-controller-manager /healthz" kcm_healthy
  wait_for kube-controller-manager "namespace default" apiserver_get /api/v1/namespaces/default
  wait_for kube-controller-manager "serviceaccount default/default" apiserver_get /api/v1/namespaces/default/serviceaccounts/default
  say "kube-controller-manager ready (pid $(pid_of kube-controller-manager), $(since "$t") s)"

  trap - EXIT
  say "control plane up in $(since "$t0") s; logs in $RUN/*.log; stop with: bash scripts/k8s/control-plane.sh stop"
  echo "export KUBECONFIG=$RUN/kubeconfig"
}

# One invocation at a time (two concurrent `start`s would race for the run
# dir): lock this script file itself, which leaves nothing behind.
exec 9<"${BASH_SOURCE[0]}"
flock 9

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
