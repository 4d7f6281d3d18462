#!/usr/bin/env bash
# Print what the cluster harness may touch on the host, normalised, so that
# two snapshots (before `up`, after `down`) can be diffed:
#
#   bash tests/e2e/cluster/hoststate.sh > /tmp/before
#   ... cluster.sh up; tests; cluster.sh down ...
#   bash tests/e2e/cluster/hoststate.sh > /tmp/after && diff /tmp/before /tmp/after
#
# Read-only. Processes are listed by their executable's name (the cluster's
# binaries), which is fine for looking, not for killing.
set -uo pipefail
STATE="$(realpath -m "${RELAB_CLUSTER_DIR:-/var/lib/relab-cluster}")"

echo "## sysctls"
for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward \
  net.ipv4.conf.all.forwarding net.ipv4.conf.all.route_localnet \
  net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max \
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait; do
  echo "$k = $(sysctl -n "$k" 2>&1)"
done
echo "## links"
ip -br link | awk '{print $1, $3}' | sort
echo "## addresses"
ip -br addr | sort
echo "## routes"
ip route | sort
echo "## netns"
ip netns list 2>&1
echo "## iptables (host, counters dropped)"
for t in filter nat mangle raw; do iptables-save -t "$t" 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'; done
for t in filter nat mangle raw; do ip6tables-save -t "$t" 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'; done
echo "## mounts (target fstype)"
findmnt -rn -o TARGET,FSTYPE | grep -v '^/proc/sys/fs/binfmt_misc' | sort
echo "## top-level cgroups (kubepods, relab)"
for r in $(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts); do
  ls -d "$r"/kubepods* "$r"/*relab* 2>/dev/null
done
echo "## paths"
for p in /var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns /run/xtables.lock \
  /var/lib/kubelet /var/lib/containerd /etc/containerd /opt/containerd /opt/cni /etc/cni/net.d \
  /var/run/kubernetes /usr/libexec/kubernetes /etc/kubernetes /var/lib/etcd /var/lib/kube-proxy "$STATE"; do
  if [ -e "$p" ] || [ -L "$p" ]; then echo "$p exists ($(find "$p" 2>/dev/null | wc -l) entries)"; else echo "$p absent"; fi
done
echo "## cluster processes"
for p in /proc/[0-9]*; do
  e=$(readlink "$p/exe" 2>/dev/null) || continue
  case "$(basename "$e")" in
    etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | containerd | containerd-shim* | runc | pause | busybox)
      echo "$(basename "$e") pid ${p#/proc/}" ;;
  esac
done | sort
