#!/usr/bin/env bash
# Smoke test of a cluster made by cluster.sh up: a pod from a locally built
# image (FROM scratch + Debian's static busybox, never pulled) reaches
# Running/Ready, answers over its pod IP and a ClusterIP Service from the
# node's netns, from the host (host routes) and from inside the pod (hairpin
# through its own Service); `kubectl logs` and `kubectl exec` work; the pod
# reaches the API server through the `kubernetes` Service. Cleans up its
# objects at the end (the image stays in containerd until `down`).
#
#   bash tests/e2e/cluster/cluster.sh up && bash tests/e2e/cluster/smoke.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${RELAB_CACHE:-/var/cache/relab}"
CCACHE="$CACHE/cluster"
IMAGE=localhost/relab-busybox:smoke
NS=relab-smoke
cluster() { bash "$HERE/cluster.sh" "$@"; }
k() { cluster exec kubectl "$@"; }
say() { printf '[smoke] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
T0=$(now)

# ---- the image: scratch + busybox, a page to serve, nonroot
t=$(now)
TAR="$CCACHE/busybox.oci.tar"
BB="$(command -v busybox)"
sum="$(sha256sum "$BB" | cut -d' ' -f1) $IMAGE v1"
if [ ! -s "$TAR" ] || [ "$(cat "$CCACHE/busybox.stamp" 2>/dev/null)" != "$sum" ]; then
  ctx="$CCACHE/busybox-ctx"
  rm -rf "$ctx"; mkdir -p "$ctx/www"
  cp "$BB" "$ctx/busybox"
  echo "hello from relab-smoke" > "$ctx/www/index.html"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nUSER 65532:65532\nENTRYPOINT ["/bin/busybox"]\n' > "$ctx/Dockerfile"
  b=(buildah --root "$CCACHE/buildah/root" --runroot "$CCACHE/buildah/run" --storage-driver vfs)
  "${b[@]}" bud --quiet --layers=false -t "$IMAGE" "$ctx" >/dev/null
  rm -f "$TAR.tmp"
  "${b[@]}" push --quiet "$IMAGE" "oci-archive:$TAR.tmp:$IMAGE"
  "${b[@]}" rmi --all --force >/dev/null 2>&1 || true
  mv "$TAR.tmp" "$TAR"; echo "$sum" > "$CCACHE/busybox.stamp"
fi
say "image $IMAGE: $TAR ($(since "$t") s)"
t=$(now)
cluster load "$TAR"
say "imported ($(since "$t") s)"

# ---- pod + Service
k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
t=$(now)
k create namespace "$NS" >/dev/null
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: ConfigMap
metadata: {name: extra, namespace: $NS}
data: {extra.html: "from a configmap"}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: $NS, labels: {app: web}}
spec:
  # busybox as PID 1 ignores SIGTERM: without this, every delete waits 30 s
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: $IMAGE
    imagePullPolicy: Never
    args: [httpd, -f, -v, -p, "8080", -h, /www]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 1}
    resources: {limits: {memory: 32Mi, cpu: 100m}}
    securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false}
    volumeMounts:
    - {name: extra, mountPath: /www/cm}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - {name: extra, configMap: {name: extra}}
  - {name: scratch, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: $NS}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
k -n "$NS" wait --for=condition=Ready pod/web --timeout=120s >/dev/null \
  || { k -n "$NS" describe pod web >&2; exit 1; }
say "pod web Ready ($(since "$t") s after creating the namespace)"
POD_IP=$(k -n "$NS" get pod web -o jsonpath='{.status.podIP}')
SVC_IP=$(k -n "$NS" get svc web -o jsonpath='{.spec.clusterIP}')
say "pod IP $POD_IP, Service ClusterIP $SVC_IP"

check() { # WHAT EXPECTED COMMAND...
  local what=$1 want=$2 got
  shift 2
  for _ in $(seq 1 20); do
    got=$("$@" 2>&1 || true)
    case "$got" in *"$want"*) say "ok: $what"; return 0 ;; esac
    sleep 0.5
  done
  say "FAILED: $what: got: $got"
  exit 1
}
check "pod IP from the node netns" "hello from relab-smoke" cluster exec curl -sS --max-time 3 "http://$POD_IP:8080/"
check "ClusterIP Service from the node netns" "hello from relab-smoke" cluster exec curl -sS --max-time 3 "http://$SVC_IP/"
check "ConfigMap volume" "from a configmap" cluster exec curl -sS --max-time 3 "http://$SVC_IP/cm/extra.html"
if ip route show | grep "^${SVC_IP%.*.*}\." >/dev/null; then  # (not grep -q: SIGPIPE + pipefail)
  check "ClusterIP Service from the host (host routes)" "hello from relab-smoke" curl -sS --max-time 3 "http://$SVC_IP/"
  check "pod IP from the host (host routes)" "hello from relab-smoke" curl -sS --max-time 3 "http://$POD_IP:8080/"
fi
check "kubectl exec" "uid=65532" k -n "$NS" exec web -- /bin/busybox id
# (busybox-static's wget segfaults, on the host too: nc it is)
check "pod -> its own Service (hairpin)" "hello from relab-smoke" k -n "$NS" exec web -- /bin/busybox sh -c \
  "printf 'GET / HTTP/1.0\r\n\r\n' | /bin/busybox nc -w 3 $SVC_IP 80"
KUBE_SVC=$(k get svc kubernetes -o jsonpath='{.spec.clusterIP}')
check "pod -> API server via the kubernetes Service ($KUBE_SVC:443)" "open" k -n "$NS" exec web -- /bin/busybox sh -c \
  "/bin/busybox nc -w 3 $KUBE_SVC 443 </dev/null && echo open"
check "service-account token mounted" "token" k -n "$NS" exec web -- /bin/busybox ls /var/run/secrets/kubernetes.io/serviceaccount
check "memory limit in the pod's cgroup" "33554432" k -n "$NS" exec web -- /bin/busybox cat /sys/fs/cgroup/memory/memory.limit_in_bytes
check "kubectl logs" "response:200" k -n "$NS" logs web
GW=$(ip -4 route show default | awk '{print $3; exit}')
if [ -n "$GW" ]; then
  check "nothing leaves the machine (the host's gateway $GW unreachable from the node)" "FAILED-AS-EXPECTED" \
    sh -c "bash '$HERE/cluster.sh' exec curl -sS --max-time 2 http://$GW/ >/dev/null 2>&1 && echo REACHED || echo FAILED-AS-EXPECTED"
fi

t=$(now)
k delete namespace "$NS" --wait=true >/dev/null
say "namespace deleted ($(since "$t") s)"
say "smoke test passed in $(since "$T0") s"
