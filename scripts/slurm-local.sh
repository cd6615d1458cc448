#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the Slurm test and CI
# (Debian's slurm packages + munge; no systemd needed). Facts: ../shared/reference/slurm.md.
#
#   scripts/slurm-local.sh install   apt-get the packages (root; CI does this)
#   scripts/slurm-local.sh up        write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh down      cancel jobs, stop the daemons this script started
#   scripts/slurm-local.sh status    sinfo + squeue
#
# Partitions are named like a GH200 site's: gh200 (default) and gh200-debug (30 min). The
# node advertises 2 simulated GPUs (gres gpu:gh200, File=/dev/null /dev/zero) so GPU requests
# are scheduled for real; the jobs themselves run on the CPU. State, logs and pid files live
# under $EFFBENCH_SLURM_DIR (default /tmp/effbench-slurm). The configuration must be at the
# default /etc/slurm/slurm.conf: Snakemake's job step drops SLURM_CONF (and every other
# SLURM_* variable but the job's id) before its srun. An /etc/slurm/slurm.conf this script did
# not write is never touched. Needs root (daemons run as root / slurm / munge).
set -euo pipefail
DIR=${EFFBENCH_SLURM_DIR:-/tmp/effbench-slurm}
ETC=/etc/slurm
CONF=$ETC/slurm.conf
MARK="# Written by scripts/slurm-local.sh"
PORT_CTLD=${EFFBENCH_SLURM_PORT:-6817}

die() { echo "slurm-local: $*" >&2; exit 1; }
have_packages() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; }

wait_for() {  # seconds, description, command...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "slurm-local: timed out waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}

stop_pidfile() {  # pidfile, name: SIGTERM, then SIGKILL after 10 s
  local f=$1 name=$2 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then echo "slurm-local: $name did not stop, killing $pid" >&2; kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

install() {
  [ "$(id -u)" = 0 ] || die "install needs root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
}

write_conf() {
  local host=$1 cpus mem
  cpus=$(nproc)
  # Leave the host some memory; at most 20 GB for jobs.
  mem=$(awk '/MemTotal/ {m = int($2 / 1024 * 0.8); print (m > 20000 ? 20000 : m)}' /proc/meminfo)
  if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script: not touching a real cluster's configuration"
  fi
  mkdir -p "$ETC"
  cat > "$CONF" <<CONF
$MARK: a single-node test cluster (state in $DIR).
ClusterName=effbench-test
SlurmctldHost=$host
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$PORT_CTLD
SlurmdPort=$((PORT_CTLD + 1))
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:gh200:2 State=UNKNOWN
PartitionName=gh200 Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gh200-debug Nodes=$host MaxTime=30 State=UP
CONF
  cat > "$ETC/gres.conf" <<CONF
$MARK
NodeName=$host Name=gpu Type=gh200 File=/dev/null
NodeName=$host Name=gpu Type=gh200 File=/dev/zero
CONF
}

up() {
  [ "$(id -u)" = 0 ] || die "up needs root (the daemons run as root, slurm and munge)"
  have_packages || die "Slurm is not installed: run scripts/slurm-local.sh install (apt: slurmctld slurmd slurm-client munge)"
  local host
  host=$(hostname -s)
  getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts
  mkdir -p "$DIR"/{state,spool,log,run}
  chown slurm:slurm "$DIR/state" "$DIR/log"
  # munge: key (owned by munge, 0400), socket directory, daemon as the munge user.
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid || die "munged did not start"
    wait_for 10 munge sh -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$DIR/run/munged.ours"  # ours to stop on down
  fi
  [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null && die "already up ($DIR)"
  write_conf "$host"
  /usr/sbin/slurmctld -c -i -f "$CONF" || die "slurmctld did not start: $(tail -5 "$DIR/log/slurmctld.log" 2>/dev/null)"
  wait_for 15 slurmctld scontrol ping
  /usr/sbin/slurmd -f "$CONF" || die "slurmd did not start: $(tail -5 "$DIR/log/slurmd.log" 2>/dev/null)"
  wait_for 30 "the node to be idle" sh -c "sinfo -h -N -o %t | grep -qx idle"
  echo "slurm-local: up ($CONF; partitions gh200, gh200-debug)"
}

down() {
  if [ -f "$CONF" ] && head -1 "$CONF" | grep -qF "$MARK" && scontrol ping >/dev/null 2>&1; then
    scancel --full --quiet --partition=gh200,gh200-debug 2>/dev/null || true
    wait_for 15 "jobs to end" sh -c '[ -z "$(squeue -h -o %i)" ]' || true
    # Processes of jobs that did not end on SIGTERM, by their ids (slurmd knows them).
    for pid in $(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}'); do
      kill -9 "$pid" 2>/dev/null || true
    done
  fi
  stop_pidfile "$DIR/run/slurmd.pid" slurmd
  stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
  if [ -f "$DIR/run/munged.ours" ]; then
    stop_pidfile "$DIR/run/munged.ours" munged
  fi
  if [ -f "$CONF" ] && head -1 "$CONF" | grep -qF "$MARK"; then rm -f "$CONF" "$ETC/gres.conf"; fi
  echo "slurm-local: down"
}

status() { sinfo; squeue; }

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 install|up|down|status" ;;
esac
