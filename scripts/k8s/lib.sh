# Process helpers shared by scripts/k8s/control-plane.sh (the loopback control
# plane of the API tests) and tests/e2e/cluster/cluster.sh (the single-node
# cluster): components started by PID file, waited for, stopped by PID.
# Source it after setting:
#   PROC_DIR      where NAME.pid and NAME.log live
#   TIMEOUT       seconds wait_for waits at most
#   LAUNCH_WRAP   (array, may be empty) a command that runs before the
#                 binary's shell, e.g. (nsenter --net=/run/netns/NODE)
#   TAIL_ERRORS, TAIL_LINES   how much of a log tail_log shows (default 10, 25)
# and defining say and die.

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

pid_of() { [ -s "$PROC_DIR/$1.pid" ] && cat "$PROC_DIR/$1.pid"; }
# a zombie (exited, not yet reaped by its parent) is not running
running() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
exe_of() { local e; e=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1; basename "${e% (deleted)}"; }

# The PID recorded for component $1 is alive and runs that binary (a reused
# PID is not taken for it).
alive() {
  local pid
  pid=$(pid_of "$1") || return 1
  [ -n "$pid" ] && running "$pid" || return 1
  [ "$(exe_of "$pid")" = "$1" ]
}

# tail_log NAME [LINES]: the errors and the last lines of NAME's log.
tail_log() {
  local f="$PROC_DIR/$1.log"
  local errors='^[EF][0-9]{4} |"level":"(error|fatal|panic)"|level=(error|fatal)'
  [ -f "$f" ] || return 0
  if grep -qE "$errors" "$f" 2>/dev/null; then
    say "errors in $f (last ${TAIL_ERRORS:-10}):"
    grep -E "$errors" "$f" | tail -n "${TAIL_ERRORS:-10}" | cut -c1-400 | sed 's/^/    /' >&2
  fi
  say "last lines of $f:"
  tail -n "${2:-${TAIL_LINES:-25}}" "$f" 2>/dev/null | cut -c1-400 | sed 's/^/    /' >&2 || true
}

# wait_for NAME DESCRIPTION COMMAND...: until COMMAND succeeds, while the
# component NAME is alive, at most TIMEOUT seconds.
wait_for() {
  local name=$1 what=$2 t0
  shift 2
  t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      say "$name exited while waiting for $what"
      tail_log "$name"
      return 1
    fi
    if [ $(($(date +%s) - t0)) -ge "$TIMEOUT" ]; then
      say "timed out after ${TIMEOUT}s waiting for $what"
      tail_log "$name"
      return 1
    fi
    sleep 0.3
  done
}

# launch NAME BINARY ARGS...: in a session of its own (through LAUNCH_WRAP),
# log in $PROC_DIR/NAME.log; the PID file is written by the process itself
# before it execs, so it holds the binary's PID, not a wrapper's.
launch() {
  local name=$1
  shift
  rm -f "$PROC_DIR/$name.pid"
  # fds 8 and 9 (the callers' saved stderr and invocation lock) are closed:
  # the daemons must not hold them.
  # shellcheck disable=SC2016
  setsid "${LAUNCH_WRAP[@]}" bash -c 'echo $$ > "$0"; exec "$@"' "$PROC_DIR/$name.pid" "$@" \
    </dev/null >"$PROC_DIR/$name.log" 2>&1 8>&- 9<&- &
  for _ in $(seq 1 50); do [ -s "$PROC_DIR/$name.pid" ] && break; sleep 0.1; done
  [ -s "$PROC_DIR/$name.pid" ] || die "$name did not start"
  # until the wrapper has exec'd the binary itself
  for _ in $(seq 1 50); do alive "$name" && return 0; sleep 0.1; done
  tail_log "$name"
  die "$name did not start"
}

# stop_pid LABEL PID: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
  local label=$1 pid=$2 t
  running "$pid" || return 0
  t=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do running "$pid" || break; sleep 0.05; done
  if running "$pid"; then
    say "$label ($pid) still running after 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.05; done
  fi
  say "stopped $label (pid $pid, $(since "$t") s)"
}
