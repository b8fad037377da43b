#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the tests of the cluster profile (slurm/config.yaml).
#
#   bash tests/slurm/cluster.sh up       # install (Debian) if missing, start munged, slurmctld, slurmd
#   bash tests/slurm/cluster.sh down     # cancel jobs, stop the daemons by the PIDs in their pid files
#   bash tests/slurm/cluster.sh status   # daemons, sinfo, squeue
#   bash tests/slurm/cluster.sh env      # the line to eval: export SLURM_CONF=...
#
# Everything lives in one state directory ($PARROTSCOPE_SLURM_DIR, default /tmp/parrotscope-slurm):
# slurm.conf, its own munge key and socket, pid files, logs, controller state and slurmd spool. No
# file under /etc is written. Slurm's commands find the configuration through SLURM_CONF (which
# `up` and `env` print) and, inside jobs, through the node-local link /run/slurm/conf/slurm.conf. The daemons run as root (slurmd must), without systemd and without cgroups
# (proctrack/linuxproc, task/none). No accounting (no slurmdbd): `sacct` does not work, so the
# profile polls with squeue, which needs MinJobAge >= 3 x the plugin's
# slurm-init-seconds-before-status-checks (40 s by default): MinJobAge=300 here.
#
# Needs root. Slurm 22.05 (Debian 12 `slurmctld slurmd slurm-client munge`); `up` installs those
# packages with apt-get when a command is missing. Idempotent: `up` on a running healthy cluster
# and `down` on a stopped one do nothing. Exit status: 0 ok, 1 failure, 2 usage, 3 cannot run here
# (not root, or Slurm missing and no apt-get).
set -euo pipefail

STATE=${PARROTSCOPE_SLURM_DIR:-/tmp/parrotscope-slurm}
CONF=$STATE/slurm.conf
MUNGE_DIR=$STATE/munge
SOCKET=$STATE/run/munge.socket  # its directory must be 0755 (clients of any user)
PARTITION=${PARROTSCOPE_SLURM_PARTITION:-debug}
MIN_JOB_AGE=300
DEB_PACKAGES=(slurmctld slurmd slurm-client munge)
UP_TIMEOUT=${PARROTSCOPE_SLURM_UP_TIMEOUT:-60}

# daemon name -> pid file; the process name (/proc/PID/comm) is checked before any signal, so a
# recycled PID is never killed.
declare -A PIDFILE=(
  [slurmd]=$STATE/slurmd.pid
  [slurmctld]=$STATE/slurmctld.pid
  [munged]=$STATE/munged.pid
)

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    say "cannot run: needs root (slurmd runs as root; packages come from apt-get)"
    exit 3
  fi
}

have_slurm() {
  local c
  for c in slurmctld slurmd sinfo squeue sbatch scontrol scancel munged mungekey munge unmunge; do
    command -v "$c" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$c" >/dev/null 2>&1 || return 1
  done
}

install_slurm() {
  have_slurm && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot run: Slurm is not installed and apt-get is not available (install: ${DEB_PACKAGES[*]})"
    exit 3
  fi
  say "installing ${DEB_PACKAGES[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  # Debian's policy-rc.d in containers refuses to start the services: fine, this script starts them.
  apt-get install -y -qq --no-install-recommends "${DEB_PACKAGES[@]}" >/dev/null \
    || die "apt-get install ${DEB_PACKAGES[*]} failed"
  have_slurm || die "Slurm commands still missing after installing ${DEB_PACKAGES[*]}"
}

# PID from a pid file if that process is alive and is the named daemon, else empty.
live_pid() {
  local name=$1 file=${PIDFILE[$1]} pid
  [ -s "$file" ] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 0
  [ "$(cat "/proc/$pid/comm")" = "$name" ] && echo "$pid"
  return 0
}

stop_daemon() {
  local name=$1 pid i
  pid=$(live_pid "$name")
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
      [ -d "/proc/$pid" ] || break
      sleep 0.2
    done
    if [ -d "/proc/$pid" ]; then
      say "$name ($pid) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    say "stopped $name ($pid)"
  fi
  rm -f "${PIDFILE[$name]}"  # gone or stale
}

node_state() {
  SLURM_CONF=$CONF timeout 10 sinfo -h -N -n localhost -o %T 2>/dev/null | head -1 || true
}

write_conf() {
  local node
  # The node line as slurmd sees this machine (CPUs, sockets, cores, threads, RealMemory), under
  # the name localhost, which slurmd is started as.
  node=$(slurmd -C | head -1) || die "slurmd -C failed"
  [[ $node == NodeName=* ]] || die "unexpected output of slurmd -C: $node"
  node=$(sed -E 's/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1/' <<<"$node")
  cat >"$CONF.tmp" <<EOF
# Written by tests/slurm/cluster.sh: a one-node Slurm for the tests of the cluster profile.
ClusterName=parrotscope
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No systemd, no cgroups.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
# Cores and memory are consumable; without DefMemPerCPU a job would take the node's whole memory.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
# No accounting database: sacct does not work, job states come from squeue. Finished jobs stay
# visible to squeue for MinJobAge seconds, which must be >= 3 x the Slurm executor plugin's
# slurm-init-seconds-before-status-checks (40 s by default).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
InactiveLimit=0
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munged() {
  [ -n "$(live_pid munged)" ] && return 0
  rm -f "${PIDFILE[munged]}" "$SOCKET" "$SOCKET.lock"
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    mungekey --create --keyfile "$MUNGE_DIR/munge.key" || die "mungekey --create failed"
  fi
  chmod 0400 "$MUNGE_DIR/munge.key"
  # --force: the state directory may sit under a sticky world-writable /tmp, which munged calls
  # insecure; the key's directory is 0700 and the socket's 0755, both owned by root.
  munged --force --key-file "$MUNGE_DIR/munge.key" --socket "$SOCKET" \
    --pid-file "${PIDFILE[munged]}" --seed-file "$MUNGE_DIR/munged.seed" \
    --log-file "$STATE/log/munged.log" \
    || die "munged did not start; see $STATE/log/munged.log"
  munge -S "$SOCKET" -n | unmunge -S "$SOCKET" >/dev/null \
    || die "munge credentials do not round-trip; see $STATE/log/munged.log"
}

# Slurm's commands find their configuration through SLURM_CONF, else /etc/slurm/slurm.conf, else
# /run/slurm/conf/slurm.conf (where a configless slurmd caches it on a compute node). The Slurm
# executor plugin drops SLURM_* variables (SLURM_CONF too) before the `srun` inside each job, so
# `up` links the configuration to the node-local path; `down` removes that link.
NODE_CONF=/run/slurm/conf/slurm.conf

link_node_conf() {
  if [ -e /etc/slurm/slurm.conf ]; then
    die "/etc/slurm/slurm.conf exists (another Slurm setup?): jobs would read it instead of $CONF"
  fi
  if [ -e "$NODE_CONF" ] || [ -L "$NODE_CONF" ]; then
    [ "$(readlink "$NODE_CONF")" = "$CONF" ] && return 0
    die "$NODE_CONF exists and is not this script's link to $CONF (another Slurm on this machine?)"
  fi
  mkdir -p "$(dirname "$NODE_CONF")"
  ln -s "$CONF" "$NODE_CONF"
}

unlink_node_conf() {
  if [ -L "$NODE_CONF" ] && [ "$(readlink "$NODE_CONF")" = "$CONF" ]; then
    rm -f "$NODE_CONF"
    rmdir "$(dirname "$NODE_CONF")" "$(dirname "$(dirname "$NODE_CONF")")" 2>/dev/null || true
  fi
}

print_env() {
  echo "export SLURM_CONF=$CONF"
}

up() {
  need_root
  install_slurm
  local state
  if [ -s "$CONF" ] && [ -n "$(live_pid munged)" ] && [ -n "$(live_pid slurmctld)" ] \
    && [ -n "$(live_pid slurmd)" ]; then
    state=$(node_state)
    if [[ $state == idle* || $state == mix* || $state == alloc* ]]; then
      say "already up (node localhost: $state)"
      print_env
      return 0
    fi
  fi
  # Anything half-up is stopped and started afresh.
  stop_all quiet
  mkdir -p "$STATE" "$STATE/ctld" "$STATE/spool" "$STATE/log" "$STATE/run" "$MUNGE_DIR"
  chmod 0755 "$STATE" "$STATE/run"
  chmod 0700 "$MUNGE_DIR" "$STATE/ctld" "$STATE/spool"
  write_conf
  link_node_conf
  start_munged
  export SLURM_CONF=$CONF
  # -c: a fresh controller state (no jobs left from an earlier run), -i: ignore state errors.
  slurmctld -c -i -f "$CONF" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
  slurmd -N localhost -f "$CONF" || die "slurmd did not start; see $STATE/log/slurmd.log"
  local t0=$SECONDS
  while :; do
    state=$(node_state)
    [[ $state == idle* ]] && break
    # A node left down or drained by an earlier run is resumed.
    if [[ $state == down* || $state == drain* ]]; then
      scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    fi
    if (( SECONDS - t0 > UP_TIMEOUT )); then
      say "node localhost is not idle after ${UP_TIMEOUT} s (state: ${state:-no answer})"
      tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  say "up in $((SECONDS - t0)) s: partition $PARTITION, $(sinfo -h -N -o '%c CPUs, %m MB' -n localhost)"
  print_env
}

stop_all() {
  # Cancel whatever still runs (all jobs of this private cluster are ours), then stop the daemons:
  # slurmd first, then the controller, then munged (both need it to the end).
  if [ -n "$(live_pid slurmctld)" ] && [ -s "$CONF" ]; then
    local jobs
    jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo $jobs)"
      # shellcheck disable=SC2086
      SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null || true
      sleep 2
    fi
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  stop_daemon munged
  rm -f "$SOCKET" "$SOCKET.lock"
  unlink_node_conf
  [ "${1:-}" = quiet ] || say "down"
}

down() {
  need_root
  stop_all
}

status() {
  local name pid
  for name in munged slurmctld slurmd; do
    pid=$(live_pid "$name")
    if [ -n "$pid" ]; then echo "$name: running ($pid)"; else echo "$name: stopped"; fi
  done
  if [ -n "$(live_pid slurmctld)" ]; then
    SLURM_CONF=$CONF sinfo -N -l || true
    SLURM_CONF=$CONF squeue || true
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|status|env   (state: $STATE)" >&2; exit 2 ;;
esac
