#!/usr/bin/env bash
# A real single-node Kubernetes v1.20 cluster on this machine, from Debian
# parts and the binaries scripts/k8s/build.sh --node makes, for relab's
# end-to-end tests. Every component runs in a network namespace of its own
# (the "node"); nothing it does can leave the machine. Needs root, and a
# disposable machine (it installs Debian packages and runs a kubelet).
#
#   bash tests/e2e/cluster/cluster.sh up          # idempotent; prints `export KUBECONFIG=...`
#   bash tests/e2e/cluster/cluster.sh status      # PIDs, RSS, node Ready; exit 0 when all is up
#   bash tests/e2e/cluster/cluster.sh kubeconfig  # prints the admin kubeconfig's path
#   bash tests/e2e/cluster/cluster.sh exec CMD... # CMD inside the node's netns (pod/Service IPs,
#                                                 # KUBECONFIG, CONTAINERD_ADDRESS/NAMESPACE set,
#                                                 # kubectl/helm/ctr on PATH)
#   bash tests/e2e/cluster/cluster.sh load FILE.tar...  # ctr -n k8s.io images import (oci-/docker-archive)
#   bash tests/e2e/cluster/cluster.sh down        # stops everything, leaves the machine as found
#
#   eval "$(bash tests/e2e/cluster/cluster.sh up)"; kubectl get nodes
#
# Environment (read by `up`; later subcommands use what `up` recorded):
#   RELAB_CLUSTER_DIR      state dir (default /var/lib/relab-cluster): certs, tokens,
#                          kubeconfigs, etcd data, containerd root/state, kubelet root,
#                          CNI config and IPAM, PID files, logs, what the host had before
#   RELAB_CACHE            cache (default /var/cache/relab): k8s binaries in k8s/bin,
#                          the pause image in cluster/, kubectl/helm in tools/bin
#   RELAB_CLUSTER_NETNS    the node's netns (default relab-node)
#   RELAB_CLUSTER_SUBNET   /30 of the veth pair, host end .1, node .2 (default 10.250.0.0/30)
#   RELAB_CLUSTER_POD_CIDR (default 10.244.0.0/16; the node gets the first /24)
#   RELAB_CLUSTER_SVC_CIDR (default 10.96.0.0/16; the `kubernetes` Service is its first IP)
#   RELAB_CLUSTER_HOST_ROUTES=0  no routes from the host to pod/Service IPs
#   RELAB_CLUSTER_TIMEOUT  seconds to wait for each component (default 120)
#   RELAB_CLUSTER_LOGS_TO  `down` copies the components' logs there first
#   RELAB_SKIP_APT=1       never call apt: fail if a package is missing
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
STATE="$(realpath -m "${RELAB_CLUSTER_DIR:-/var/lib/relab-cluster}")"
CACHE="${RELAB_CACHE:-/var/cache/relab}"
BIN="$CACHE/k8s/bin"
CCACHE="$CACHE/cluster"
TOOLS="$CACHE/tools/bin"
MARKER="$STATE/.relab-cluster"
TIMEOUT="${RELAB_CLUSTER_TIMEOUT:-120}"
PAUSE_IMAGE="k8s.gcr.io/pause:3.4.1"
NODE_NAME=relab-node
# kubelet's kernel tunables (pkg/kubelet/cm setupKernelTunables)
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# host paths the components write outside the state dir, whatever their
# flags say: kubelet 1.20's pod logs and device-plugin socket
# (/var/lib/kubelet/device-plugins), containerd 1.6's shim sockets
# (/run/containerd/s), libcni's cache, `ip netns`, iptables' lock. `down`
# removes those that did not exist before `up`.
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd /run/netns /run/xtables.lock)
DEPS=(containerd runc containernetworking-plugins iptables conntrack umoci buildah busybox-static etcd-server iproute2 util-linux curl openssl jq)
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
# stop order of the long-running components (the reverse of start order)
COMPONENTS=(kube-proxy kubelet containerd kube-scheduler kube-controller-manager kube-apiserver etcd)

say() { printf '[cluster] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# now, since, pid_of, running, exe_of, alive, tail_log, wait_for, launch,
# stop_pid: shared with the API tests' control plane
PROC_DIR="$STATE" TAIL_ERRORS=8 TAIL_LINES=15
LAUNCH_WRAP=() # set_config: into the node's netns
# shellcheck source=../../../scripts/k8s/lib.sh
. "$ROOT/scripts/k8s/lib.sh"
# shellcheck source=../../../scripts/k8s/pki.sh
. "$ROOT/scripts/k8s/pki.sh"

# per-stage timings, printed again at the end of `up` and `down`
STAGES=()
T_STAGE=
stage() { T_STAGE=$(now); STAGE_NAME=$1; say "== $1"; }
stage_done() {
  local t
  t=$(since "$T_STAGE")
  STAGES+=("$(printf '%-46s %6s s' "$STAGE_NAME" "$t")")
  say "   ${1:+$1; }$STAGE_NAME took $t s"
}
stage_summary() { local s; for s in "${STAGES[@]}"; do say "   $s"; done; }

# ------------------------------------------------------------ configuration
load_env() { [ -f "$STATE/env" ] && . "$STATE/env"; }

set_config() {
  NETNS="${RELAB_CLUSTER_NETNS:-relab-node}"
  HOST_VETH="relab-veth"
  local subnet="${RELAB_CLUSTER_SUBNET:-10.250.0.0/30}" base
  base="${subnet%/*}"
  [ "${subnet#*/}" = 30 ] || die "RELAB_CLUSTER_SUBNET must be a /30, not $subnet"
  VETH_NET="$subnet"
  HOST_IP="${base%.*}.$((${base##*.} + 1))"
  NODE_IP="${base%.*}.$((${base##*.} + 2))"
  POD_CIDR="${RELAB_CLUSTER_POD_CIDR:-10.244.0.0/16}"
  SVC_CIDR="${RELAB_CLUSTER_SVC_CIDR:-10.96.0.0/16}"
  # the node's pod range: the first /24, what kube-controller-manager
  # allocates to the first (only) node
  NODE_POD_CIDR="${POD_CIDR%.*.*/*}.0.0/24"
  local s="${SVC_CIDR%/*}"
  SVC_IP="${s%.*}.$((${s##*.} + 1))"
  HOST_ROUTES="${RELAB_CLUSTER_HOST_ROUTES:-1}"
  SOCK="$STATE/containerd/containerd.sock"
  # every component runs inside the node's netns (nsenter --net only: the
  # mount namespace, /sys and the cgroup mounts stay the host's)
  LAUNCH_WRAP=(nsenter --net="/run/netns/$NETNS")
}

write_env() {
  cat > "$STATE/env" <<EOF
NETNS=$NETNS
HOST_VETH=$HOST_VETH
VETH_NET=$VETH_NET
HOST_IP=$HOST_IP
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
NODE_POD_CIDR=$NODE_POD_CIDR
SVC_CIDR=$SVC_CIDR
SVC_IP=$SVC_IP
HOST_ROUTES=$HOST_ROUTES
SOCK=$SOCK
EOF
}

# ---------------------------------------------------------------- helpers
inns() { nsenter --net="/run/netns/$NETNS" "$@"; }
netns_exists() { [ -n "${NETNS:-}" ] && [ -e "/run/netns/$NETNS" ]; }



rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }





stop_component() { alive "$1" && stop_pid "$1" "$(pid_of "$1")"; rm -f "$STATE/$1.pid"; }

ADMIN_TOKEN=
apiget() { # PATH -> body; fails on non-2xx
  [ -n "$ADMIN_TOKEN" ] || ADMIN_TOKEN=$(cat "$STATE/admin.token")
  curl -sS --fail --max-time 5 --cacert "$STATE/pki/ca.crt" \
    -H "Authorization: Bearer $ADMIN_TOKEN" "https://$NODE_IP:6443$1"
}
apicall() { # METHOD PATH [BODY]
  [ -n "$ADMIN_TOKEN" ] || ADMIN_TOKEN=$(cat "$STATE/admin.token")
  curl -sS --fail --max-time 10 --cacert "$STATE/pki/ca.crt" -X "$1" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "https://$NODE_IP:6443$2"
}

# (no `producer | grep -q` under pipefail: grep's early exit would make the
# producer die of SIGPIPE and the pipeline fail)
etcd_healthy() { case "$(inns curl -sf --max-time 2 http://127.0.0.1:2379/health)" in *'"health":"true"'*) ;; *) return 1 ;; esac; }
apiserver_ready() { [ "$(apiget /readyz 2>/dev/null)" = ok ]; }
https_healthz() { [ "$(inns curl -sk --max-time 3 "https://127.0.0.1:$1/healthz")" = ok ]; }
http_healthz() { [ "$(inns curl -s --max-time 3 "http://127.0.0.1:$1/healthz")" = ok ]; }
kube_proxy_healthy() { inns curl -sf --max-time 3 http://127.0.0.1:10256/healthz >/dev/null; }
ctr_() { ctr --address "$SOCK" "$@"; }
containerd_ready() { ctr_ version >/dev/null; }
node_ready() {
  apiget "/api/v1/nodes/$NODE_NAME" | jq -e '
    ([.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length == 1)
    and ([.spec.taints[]? | select(.key == "node.kubernetes.io/not-ready" or .key == "node.kubernetes.io/uninitialized")] | length == 0)' >/dev/null
}

# the hierarchies of the host's cgroup mounts (v1 controllers, name=systemd,
# and the v2 `unified` one of a hybrid setup)
cgroup_roots() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts; }
kubepods_dirs() { local r; for r in $(cgroup_roots); do [ -d "$r/kubepods" ] && echo "$r/kubepods"; done; return 0; }
kubepods_pids() {
  local d
  for d in $(kubepods_dirs); do find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -un
}

# containerd's shims: every process whose command line names this cluster's
# containerd socket (`containerd-shim-runc-v2 -namespace k8s.io -id ID
# -address $SOCK`; the socket path is unique to the state dir) and whose
# executable is a shim. Their parent is not containerd: they daemonize and
# are reparented to PID 1, and they outlive containerd by design. (Debian's
# containerd 1.6 writes no shim.pid, only the containers' init.pid.)
shim_pids() {
  local p c
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$c" in *"-address $SOCK "*) ;; *) continue ;; esac
    p=${p#/proc/}
    case "$(exe_of "$p" 2>/dev/null)" in containerd-shim*) running "$p" && echo "$p" ;; esac
  done
  return 0
}

mounts_under() { # mount points under $1 (or $1 itself), deepest first
  findmnt -rn -o TARGET | sed 's/\\x20/ /g' | awk -v p="$1" '$0 == p || index($0, p "/") == 1' \
    | awk '{print length($0) "\t" $0}' | sort -rn | cut -f2-
}

# ---------------------------------------------------------------- packages
install_packages() {
  local missing=() p st
  for p in "${DEPS[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "all installed: ${DEPS[*]}"
    return
  fi
  [ -z "${RELAB_SKIP_APT:-}" ] || die "missing packages: ${missing[*]} (RELAB_SKIP_APT is set)"
  say "installing (apt): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get "${APT_OPTS[@]}" update -qq
  apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ------------------------------------------------------------- pause image
# FROM scratch + the static pause binary build.sh --node compiled, as an
# oci-archive in the cache; rebuilt when the binary changes. buildah with vfs
# storage of its own under the cache (the system's storage is not touched).
build_pause_image() {
  PAUSE_TAR="$CCACHE/pause.oci.tar"
  local sum
  sum="$(sha256sum "$BIN/pause" | cut -d' ' -f1) $PAUSE_IMAGE"
  if [ -s "$PAUSE_TAR" ] && [ "$(cat "$CCACHE/pause.stamp" 2>/dev/null)" = "$sum" ]; then
    say "cached: $PAUSE_TAR ($PAUSE_IMAGE)"
    return
  fi
  mkdir -p "$CCACHE/pause-ctx"
  install -m 0755 "$BIN/pause" "$CCACHE/pause-ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$CCACHE/pause-ctx/Dockerfile"
  local b=(buildah --root "$CCACHE/buildah/root" --runroot "$CCACHE/buildah/run" --storage-driver vfs)
  "${b[@]}" bud --quiet --layers=false -t "$PAUSE_IMAGE" "$CCACHE/pause-ctx" >/dev/null
  rm -f "$PAUSE_TAR.tmp"
  "${b[@]}" push --quiet "$PAUSE_IMAGE" "oci-archive:$PAUSE_TAR.tmp:$PAUSE_IMAGE"
  "${b[@]}" rmi --all --force >/dev/null 2>&1 || true
  mv "$PAUSE_TAR.tmp" "$PAUSE_TAR"
  echo "$sum" > "$CCACHE/pause.stamp"
  say "built $PAUSE_TAR ($PAUSE_IMAGE, $(du -h "$PAUSE_TAR" | cut -f1))"
}

# -------------------------------------------------------------------- pki
gen_pki() {
  local d="$STATE/pki"
  pki_ca "$d" relab-cluster-ca
  pki_cert "$d" apiserver /CN=kube-apiserver serverAuth "IP:127.0.0.1,IP:$NODE_IP,IP:$SVC_IP,$PKI_APISERVER_DNS"
  # kubelet's serving cert (the API server checks it for logs/exec)
  pki_cert "$d" kubelet "/CN=system:node:$NODE_NAME/O=system:nodes" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  # the API server's client cert towards kubelets
  pki_cert "$d" apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters" clientAuth
  pki_service_accounts "$d"
}

# kubeconfig FILE SERVER_IP USER TOKEN: the cluster's API server at SERVER_IP as USER.
kubeconfig() {
  write_kubeconfig "$1" "https://$2:6443" "$STATE/pki/ca.crt" relab-cluster "$3" "$4"
}

gen_identities() {
  local admin node kcm sched proxy
  admin=$(openssl rand -hex 24); node=$(openssl rand -hex 24); kcm=$(openssl rand -hex 24)
  sched=$(openssl rand -hex 24); proxy=$(openssl rand -hex 24)
  echo "$admin" > "$STATE/admin.token"
  # token,user,uid,"groups"; RBAC's bootstrap policy binds system:kube-controller-manager,
  # system:kube-scheduler and system:kube-proxy (system:node-proxier); the Node
  # authorizer and NodeRestriction take system:node:NAME in system:nodes.
  cat > "$STATE/tokens.csv" <<EOF
$admin,relab-admin,relab-admin,"system:masters"
$node,system:node:$NODE_NAME,system:node:$NODE_NAME,"system:nodes"
$kcm,system:kube-controller-manager,system:kube-controller-manager,""
$sched,system:kube-scheduler,system:kube-scheduler,""
$proxy,system:kube-proxy,system:kube-proxy,""
EOF
  chmod 600 "$STATE/tokens.csv" "$STATE/admin.token"
  # the admin's: the node IP, reachable from the host (veth) and in the netns
  kubeconfig "$STATE/kubeconfig" "$NODE_IP" relab-admin "$admin"
  kubeconfig "$STATE/kubelet.kubeconfig" 127.0.0.1 "system:node:$NODE_NAME" "$node"
  kubeconfig "$STATE/controller-manager.kubeconfig" 127.0.0.1 system:kube-controller-manager "$kcm"
  kubeconfig "$STATE/scheduler.kubeconfig" 127.0.0.1 system:kube-scheduler "$sched"
  kubeconfig "$STATE/proxy.kubeconfig" 127.0.0.1 system:kube-proxy "$proxy"
}

# ------------------------------------------------------------ host record
# What `down` needs to leave the machine as found, written before anything
# is changed: kubelet's sysctls, which host paths existed.
record_host() {
  local k p
  mkdir -p "$STATE/host"
  for k in "${SYSCTLS[@]}"; do
    [ -e "/proc/sys/${k//.//}" ] && echo "$k=$(sysctl -n "$k")"
  done > "$STATE/host/sysctl"
  for p in "${HOST_PATHS[@]}"; do
    [ -e "$p" ] || [ -L "$p" ] && echo "$p"
  done > "$STATE/host/existed"
  if mountpoint -q /run/netns 2>/dev/null; then echo /run/netns > "$STATE/host/mounted"; else : > "$STATE/host/mounted"; fi
}

preflight() {
  [ "$(id -u)" = 0 ] || die "run as root (netns, kubelet, containerd, mounts, cgroups)"
  [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] \
    || die "this machine has cgroup v2 only; kubelet 1.20 with cgroupfs needs cgroup v1 (use kind instead: docs/e2e.md)"
  [ -z "$(kubepods_dirs)" ] || die "a kubepods cgroup exists already ($(kubepods_dirs | tr '\n' ' ')): another kubelet runs here?"
  [ ! -e "/run/netns/$NETNS" ] || die "netns $NETNS exists but $STATE does not record it: remove it (ip netns del $NETNS) or set RELAB_CLUSTER_NETNS"
  ! ip link show "$HOST_VETH" >/dev/null 2>&1 || die "interface $HOST_VETH exists already (ip link del $HOST_VETH if it is a leftover)"
  local c
  for c in "$VETH_NET" "$POD_CIDR" "$SVC_CIDR"; do
    [ -z "$(ip -4 route show root "$c" 2>/dev/null)" ] \
      || die "the host routes $c already ($(ip -4 route show root "$c" | head -1)): set RELAB_CLUSTER_SUBNET/POD_CIDR/SVC_CIDR"
  done
}

# ---------------------------------------------------------------- network
setup_netns() {
  ip netns add "$NETNS"
  ip link add "$HOST_VETH" type veth peer name eth0 netns "$NETNS"
  # the host end never forwards what comes from the node (whatever the
  # host's global setting is), and speaks no IPv6
  echo 0 > "/proc/sys/net/ipv4/conf/$HOST_VETH/forwarding"
  echo 1 > "/proc/sys/net/ipv6/conf/$HOST_VETH/disable_ipv6" 2>/dev/null || true
  ip addr add "$HOST_IP/30" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  inns ip link set lo up
  inns sh -c 'echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6' 2>/dev/null || true
  inns ip addr add "$NODE_IP/30" dev eth0
  inns ip link set eth0 up
  # the default route leads to the host end, which does not forward: nothing
  # leaves the machine (kube-apiserver and kubelet want a default route)
  inns ip route add default via "$HOST_IP" dev eth0
  # ...silently, so that a lookup of the host's DNS servers or a cloud
  # metadata probe (kubelet's credential providers, cAdvisor) would wait for
  # its timeout (20 s for a DNS lookup): these fail at once instead, for the
  # components and for the pods (no cluster DNS here anyway)
  inns ip route add unreachable 169.254.0.0/16
  local ns
  for ns in $(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ && $2 !~ /^127\./ {print $2}' /etc/resolv.conf 2>/dev/null | sort -u); do
    inns ip route add unreachable "$ns/32" 2>/dev/null || true
  done
  if [ "$HOST_ROUTES" = 1 ]; then
    # pod and Service IPs reachable from the host too (go with the veth)
    ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_VETH"
    ip route add "$SVC_CIDR" via "$NODE_IP" dev "$HOST_VETH"
  fi
}

# ------------------------------------------------------------ containerd
write_containerd_config() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
# opt would create /opt/containerd; the others are snapshotters not used here
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # REQUIRED here: root lacks CAP_SYS_RESOURCE (every sandbox would fail with
  # "can't get final child's PID from pipe")
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
  cat > "$STATE/cni/net.d/10-relab.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "relab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

# ---------------------------------------------------------------- kubelet
write_kubelet_config() {
  cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $STATE/pki/kubelet.crt
tlsPrivateKeyFile: $STATE/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
# no cluster DNS: pods get the host's resolv.conf
resolvConf: /etc/resolv.conf
# images are imported, never pulled: never garbage-collect them, and no
# disk-pressure eviction on a busy disk
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
volumePluginDir: $STATE/kubelet-plugins
protectKernelDefaults: false
makeIPTablesUtilChains: true
EOF
}

# ------------------------------------------------------------------- down
cmd_down() {
  local t0
  t0=$(now)
  STAGES=()
  if [ ! -e "$STATE" ]; then
    say "not running (no $STATE)"
    return 0
  fi
  [ -f "$MARKER" ] || die "$STATE exists but was not created by this script (no $MARKER): not touching it"
  load_env || { say "no $STATE/env: nothing was started"; }
  local c pid p

  if [ -n "${RELAB_CLUSTER_LOGS_TO:-}" ] && ls "$STATE"/*.log >/dev/null 2>&1; then
    mkdir -p "$RELAB_CLUSTER_LOGS_TO"
    cp "$STATE"/*.log "$RELAB_CLUSTER_LOGS_TO"/ && say "logs copied to $RELAB_CLUSTER_LOGS_TO"
  fi

  # 1. workloads. The controllers and the scheduler go first, so that nothing
  # re-creates what is deleted; then every pod is deleted through the API
  # (kubelet kills the containers, CNI tears the sandboxes' network down).
  stage "stop workloads"
  if [ -n "${NETNS:-}" ] && alive kube-apiserver && alive kubelet && apiserver_ready; then
    stop_component kube-controller-manager
    stop_component kube-scheduler
    local nss n left
    nss=$(apiget /api/v1/namespaces | jq -r '.items[].metadata.name' 2>/dev/null || true)
    n=$(apiget /api/v1/pods | jq '.items | length' 2>/dev/null || echo 0)
    if [ "${n:-0}" -gt 0 ]; then
      for c in $nss; do
        apicall DELETE "/api/v1/namespaces/$c/pods" '{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":1}' >/dev/null 2>&1 || true
      done
      # until the containers and sandboxes are gone (kubelet removes the
      # API objects some 10 s later, after its housekeeping: not waited for)
      for _ in $(seq 1 60); do
        left=$(kubepods_pids | wc -l)
        [ "$left" = 0 ] && break
        sleep 0.5
      done
      say "deleted $n pod(s) through the API; $left container process(es) left"
    else
      say "no pods"
    fi
  fi
  stage_done

  # 2. kube-proxy, kubelet
  stage "stop kube-proxy, kubelet"
  stop_component kube-proxy
  stop_component kubelet
  stage_done

  # 3. what runs under containerd: tasks killed and deleted through it, then
  # containerd, then any shim left (found by its -address, see shim_pids)
  stage "stop containers, containerd, shims"
  if [ -n "${SOCK:-}" ] && alive containerd; then
    local ns id
    for ns in $(ctr_ namespaces ls -q 2>/dev/null); do
      for id in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do
        ctr_ -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
      done
      for id in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do
        ctr_ -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
      done
    done
  fi
  stop_component containerd
  if [ -n "${SOCK:-}" ]; then
    for pid in $(shim_pids); do stop_pid "shim $(exe_of "$pid")" "$pid"; done
  fi
  # containers whose shim was gone: whatever is left in the kubepods cgroups
  # (created by this kubelet: `up` refuses to start when they exist)
  for _ in 1 2 3; do
    pid=$(kubepods_pids)
    [ -z "$pid" ] && break
    say "killing what is left in kubepods: $(echo "$pid" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null || true
    sleep 0.5
  done
  stage_done

  # 4. control plane, etcd
  stage "stop control plane, etcd"
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_component "$c"; done
  stage_done

  # 5. mounts, cgroups, netns, host paths, sysctls
  stage "unmount, cgroups, netns, host paths, sysctls"
  local m rc=0
  for m in $(mounts_under "$STATE"); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || { say "cannot unmount $m"; rc=1; }
  done
  for c in $(kubepods_dirs); do
    for _ in $(seq 1 20); do
      find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$c" ] || break
      sleep 0.25
    done
    [ -d "$c" ] && { say "cannot remove cgroup $c"; rc=1; }
  done
  if [ -n "${NETNS:-}" ] && [ -e "/run/netns/$NETNS" ]; then
    ip netns del "$NETNS" || { say "cannot delete netns $NETNS"; rc=1; }
  fi
  # normally gone with the netns (its peer lives there); the kernel removes
  # the pair asynchronously, so it may vanish between the look and the
  # delete: only a veth still there after a failed delete is an error
  if [ -n "${HOST_VETH:-}" ] && ip link show "$HOST_VETH" >/dev/null 2>&1; then
    if ! ip link del "$HOST_VETH" 2>/dev/null && ip link show "$HOST_VETH" >/dev/null 2>&1; then
      say "cannot delete $HOST_VETH"
      rc=1
    fi
  fi
  if [ -f "$STATE/host/existed" ]; then
    for p in "${HOST_PATHS[@]}"; do
      grep -qxF "$p" "$STATE/host/existed" && continue
      [ -e "$p" ] || [ -L "$p" ] || continue
      case "$p" in
        /run/netns)
          # `ip netns add` made it a bind mount of itself; others' netns stay
          if [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
            if ! grep -qxF /run/netns "$STATE/host/mounted"; then
              while mountpoint -q /run/netns; do umount /run/netns || break; done
            fi
            rmdir /run/netns 2>/dev/null || true
          else
            say "/run/netns holds other namespaces: left in place"
          fi
          ;;
        /run/containerd)
          if [ -S /run/containerd/containerd.sock ]; then
            say "/run/containerd/containerd.sock exists (another containerd?): left in place"
          else
            rm -rf --one-file-system /run/containerd
          fi
          ;;
        *) rm -rf --one-file-system "$p" ;;
      esac
      say "removed $p"
    done
  fi
  if [ -f "$STATE/host/sysctl" ]; then
    while IFS='=' read -r c p; do
      [ -n "$c" ] || continue
      [ "$(sysctl -n "$c")" = "$p" ] || { sysctl -qw "$c=$p" && say "restored $c=$p"; }
    done < "$STATE/host/sysctl"
  fi
  stage_done

  if [ -n "$(mounts_under "$STATE")" ]; then
    say "mounts left under $STATE: not removing it"
    rc=1
  else
    rm -rf --one-file-system "$STATE"
  fi
  stage_summary
  say "down took $(since "$t0") s"
  return "$rc"
}

# ----------------------------------------------------------------- status
cmd_status() {
  if [ ! -f "$MARKER" ]; then
    say "not running (no $STATE)"
    return 3
  fi
  load_env || true
  local c rc=0 pid total=0 r n
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if alive "$c"; then
      pid=$(pid_of "$c"); r=$(rss_kib "$pid"); total=$((total + r))
      say "$(printf '%-24s running  pid %-7s rss %4d MiB' "$c" "$pid" $((r / 1024)))"
    else
      say "$(printf '%-24s NOT running' "$c")"
      rc=1
    fi
  done
  n=0; r=0
  for pid in $(shim_pids); do n=$((n + 1)); r=$((r + $(rss_kib "$pid"))); done
  say "$(printf '%-24s %d running, rss %d MiB' 'containerd shims' "$n" $((r / 1024)))"
  total=$((total + r))
  n=0; r=0
  for pid in $(kubepods_pids); do n=$((n + 1)); r=$((r + $(rss_kib "$pid"))); done
  say "$(printf '%-24s %d processes, rss %d MiB' 'containers (kubepods)' "$n" $((r / 1024)))"
  total=$((total + r))
  say "total rss $((total / 1024)) MiB"
  if [ "$rc" = 0 ] && node_ready 2>/dev/null; then
    say "node $NODE_NAME Ready; API server https://$NODE_IP:6443 (netns $NETNS, node IP $NODE_IP)"
    echo "export KUBECONFIG=$STATE/kubeconfig"
  else
    say "node $NODE_NAME not Ready"
    rc=1
  fi
  return "$rc"
}

all_up() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  node_ready
}

# --------------------------------------------------------------------- up
cmd_up() {
  local t0 t
  t0=$(now)
  if [ -f "$MARKER" ]; then
    load_env || true
    if [ -n "${NETNS:-}" ] && all_up 2>/dev/null; then
      say "already up (node $NODE_NAME Ready, API server https://$NODE_IP:6443); nothing to do"
      echo "export KUBECONFIG=$STATE/kubeconfig"
      return 0
    fi
    say "stale state in $STATE (a component is down or the node is not Ready): tearing down first"
    cmd_down || die "tearing down the stale state failed (see above)"
    STAGES=()
  elif [ -e "$STATE" ] && [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
    die "$STATE exists and is not a relab cluster dir; set RELAB_CLUSTER_DIR or remove it"
  fi
  [ "$(id -u)" = 0 ] || die "run as root (netns, kubelet, containerd, mounts, cgroups)"
  set_config

  stage "packages"
  install_packages
  stage_done

  stage "kubernetes binaries"
  bash "$ROOT/scripts/k8s/build.sh" --node
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing after build.sh --node"
  done
  [ -x "$TOOLS/kubectl" ] || say "note: $TOOLS/kubectl missing (bash scripts/tools.sh installs kubectl and helm)"
  stage_done

  stage "pause image"
  mkdir -p "$CCACHE"
  build_pause_image
  stage_done

  preflight
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  touch "$MARKER"
  write_env
  # From here on, a failure or an interrupt tears down whatever was started.
  # The traps write to the original stderr (fd 8): an interrupt may land
  # while a health check runs with its output sent to /dev/null.
  exec 8>&2
  trap 'rc=$?; exec 2>&8; trap - EXIT INT TERM; if [ $rc -ne 0 ]; then say "up failed (exit $rc): tearing down"; cmd_down || true; fi; exit $rc' EXIT
  trap 'exec 2>&8; say "interrupted"; exit 130' INT TERM
  record_host

  stage "netns, pki, configs"
  setup_netns
  gen_pki
  gen_identities
  write_containerd_config
  write_kubelet_config
  say "netns $NETNS: node IP $NODE_IP (eth0), host end $HOST_VETH $HOST_IP; pods $NODE_POD_CIDR, services $SVC_CIDR"
  stage_done

  # ---- etcd (Debian's etcd-server; ETCD_* variables of the caller ignored)
  stage "etcd"
  local unset_etcd=() v
  for v in $(compgen -e | grep '^ETCD_' || true); do unset_etcd+=(-u "$v"); done
  launch etcd env "${unset_etcd[@]}" "$(command -v etcd)" \
    --name relab --data-dir "$STATE/etcd-data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster relab=http://127.0.0.1:2380 --initial-cluster-state new \
    --quota-backend-bytes $((1024 * 1024 * 1024)) \
    --logger zap --log-level warn
  wait_for etcd "etcd /health" etcd_healthy
  stage_done "pid $(pid_of etcd)"

  # ---- containerd: started now, it comes up while the API server does
  t=$(now)
  launch containerd "$(command -v containerd)" --config "$STATE/containerd/config.toml" --log-level warn

  stage "kube-apiserver"
  launch kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" \
    --bind-address=0.0.0.0 \
    --secure-port=6443 \
    --insecure-port=0 \
    --cert-dir="$STATE/apiserver-certs" \
    --etcd-servers=http://127.0.0.1:2379 \
    --tls-cert-file="$STATE/pki/apiserver.crt" \
    --tls-private-key-file="$STATE/pki/apiserver.key" \
    --client-ca-file="$STATE/pki/ca.crt" \
    --token-auth-file="$STATE/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-key-file="$STATE/pki/sa.pub" \
    --service-account-signing-key-file="$STATE/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SVC_CIDR" \
    --kubelet-client-certificate="$STATE/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$STATE/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$STATE/pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=true \
    --profiling=false \
    --v=1
  wait_for kube-apiserver "kube-apiserver /readyz" apiserver_ready
  stage_done "pid $(pid_of kube-apiserver), https://$NODE_IP:6443"

  stage "controller-manager, scheduler"
  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
    --cert-dir="$STATE/controller-manager-certs" \
    --flex-volume-plugin-dir="$STATE/flexvolume" \
    --use-service-account-credentials=true \
    --root-ca-file="$STATE/pki/ca.crt" \
    --service-account-private-key-file="$STATE/pki/sa.key" \
    --cluster-signing-cert-file="$STATE/pki/ca.crt" \
    --cluster-signing-key-file="$STATE/pki/ca.key" \
    --service-cluster-ip-range="$SVC_CIDR" \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
    --leader-elect=false \
    --controllers='*' \
    --profiling=false \
    --v=1
  launch kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --port=0 \
    --cert-dir="$STATE/scheduler-certs" \
    --leader-elect=false \
    --profiling=false \
    --v=1
  wait_for kube-controller-manager "kube-controller-manager /healthz" https_healthz 10257
  wait_for kube-scheduler "kube-scheduler /healthz" https_healthz 10259
  stage_done "pids $(pid_of kube-controller-manager), $(pid_of kube-scheduler)"

  stage "containerd, pause image import"
  wait_for containerd "containerd's socket" containerd_ready
  ctr_ -n k8s.io images import "$PAUSE_TAR" >/dev/null
  ctr_ -n k8s.io images ls -q > "$STATE/images.txt"
  grep -qxF "$PAUSE_IMAGE" "$STATE/images.txt" || die "$PAUSE_IMAGE not in containerd after the import"
  stage_done "pid $(pid_of containerd), $PAUSE_IMAGE imported; $(since "$t") s since containerd's start"

  stage "kubelet, kube-proxy"
  launch kubelet "$BIN/kubelet" \
    --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" \
    --cert-dir="$STATE/kubelet-pki" \
    --container-runtime=remote \
    --container-runtime-endpoint="unix://$SOCK" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --cgroup-driver=cgroupfs \
    --fail-swap-on=false \
    --containerd="$SOCK" \
    --v=1
  launch kube-proxy "$BIN/kube-proxy" \
    --kubeconfig="$STATE/proxy.kubeconfig" \
    --proxy-mode=iptables \
    --hostname-override="$NODE_NAME" \
    --bind-address="$NODE_IP" \
    --cluster-cidr="$POD_CIDR" \
    --healthz-bind-address=127.0.0.1:10256 \
    --metrics-bind-address=127.0.0.1:10249 \
    --conntrack-max-per-core=0 \
    --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 \
    --profiling=false \
    --v=1
  wait_for kubelet "kubelet /healthz" http_healthz 10248
  wait_for kube-proxy "kube-proxy /healthz" kube_proxy_healthy
  stage_done "pids $(pid_of kubelet), $(pid_of kube-proxy)"

  stage "node Ready, default ServiceAccount"
  wait_for kubelet "node $NODE_NAME Ready (and untainted)" node_ready
  wait_for kube-controller-manager "serviceaccount default/default" apiget /api/v1/namespaces/default/serviceaccounts/default
  stage_done

  trap - EXIT INT TERM
  stage_summary
  say "cluster up in $(since "$t0") s; logs in $STATE/*.log; stop with: bash tests/e2e/cluster/cluster.sh down"
  echo "export KUBECONFIG=$STATE/kubeconfig"
}

# ------------------------------------------------------------------- misc
cmd_kubeconfig() {
  [ -f "$STATE/kubeconfig" ] || die "no $STATE/kubeconfig: run up first"
  echo "$STATE/kubeconfig"
}

cmd_exec() {
  [ $# -gt 0 ] || die "usage: $0 exec CMD [ARGS...]"
  [ -f "$MARKER" ] || die "not up (no $STATE)"
  load_env
  netns_exists || die "netns $NETNS missing: run up"
  exec nsenter --net="/run/netns/$NETNS" env KUBECONFIG="$STATE/kubeconfig" \
    CONTAINERD_ADDRESS="$SOCK" CONTAINERD_NAMESPACE=k8s.io \
    PATH="$TOOLS:$BIN:$PATH" "$@"
}

cmd_load() {
  [ $# -gt 0 ] || die "usage: $0 load IMAGE.tar..."
  [ -f "$MARKER" ] || die "not up (no $STATE)"
  load_env
  alive containerd || die "containerd is not running: run up"
  local f t
  for f in "$@"; do
    t=$(now)
    ctr_ -n k8s.io images import "$f" | sed 's/^/    /' >&2
    say "imported $f ($(since "$t") s)"
  done
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  up | down)
    # one up/down at a time: lock this script file itself (leaves nothing behind)
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    [ "$(id -u)" = 0 ] || die "run as root"
    # down goes on past a failing step (it is called as a condition, so
    # errexit is off inside it) and reports failure at the end
    if [ "$cmd" = up ]; then cmd_up; elif cmd_down; then :; else exit 1; fi
    ;;
  status) cmd_status ;;
  kubeconfig) cmd_kubeconfig ;;
  exec) cmd_exec "$@" ;;
  load) cmd_load "$@" ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
