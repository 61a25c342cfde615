#!/usr/bin/env bash
# A live one-node Slurm for tests/deploy/test_slurm.py: munge, slurmctld and slurmd on this machine, all on
# 127.0.0.1 (idempotent: a Slurm this script started and that answers is left as it is).
#   bash .ci/setup-slurm.sh [VENV]   (scripts/test.sh runs it with .venv; the venv is not used here)
# Needs root (it writes /etc/slurm and starts daemons as root). Without root, or where a slurm.conf not
# written by this script exists (a real cluster's), it changes nothing and says so; the tests then skip
# with the reason they find (sinfo does not answer).
#
# The node is declared with 8 CPUs whatever the machine has (SlurmdParameters=config_overrides), so an
# array of 4 one-CPU worker tasks runs at once on a 2-core CI machine. No accounting database (slurmdbd),
# so plain sacct has nothing; final states and exit codes are in the job completion log, $SLURM_DIR/jobcomp.log,
# which `sacct -c` reads.
set -euo pipefail

SLURM_DIR=${SWEEP_SLURM_DIR:-/var/tmp/sweep-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by lambda-sweep .ci/setup-slurm.sh"

if [ "$(id -u)" != 0 ]; then
    echo "slurm setup skipped: not root (tests/deploy/test_slurm.py will skip unless a Slurm answers)"
    exit 0
fi
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "slurm setup skipped: $CONF was not written by this script; leaving this machine's Slurm alone"
    exit 0
fi

bash "$(dirname "$0")/../scripts/install-debian.sh" slurm-wlm munge

# --- munge: a key, and the daemon (as the munge user) ----------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null
fi

# --- slurm.conf: one node, one partition, requeue allowed --------------------------------------------------
host=$(hostname -s)
mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool" /etc/slurm
want=$(cat <<CONF
$MARK
ClusterName=sweep-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
KillWait=30
AuthInfo=cred_expire=10
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/jobcomp.log
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)
changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$CONF"
    changed=1
fi

# --- the daemons ----------------------------------------------------------------------------------------
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" = 1 ]; then  # a new configuration: restart what this script started before
    for pidfile in "$SLURM_DIR/slurmd.pid" "$SLURM_DIR/slurmctld.pid"; do
        if running "$pidfile"; then
            pid=$(cat "$pidfile"); kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
fi
running "$SLURM_DIR/slurmctld.pid" || /usr/sbin/slurmctld
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
running "$SLURM_DIR/slurmd.pid" || /usr/sbin/slurmd

# Wait for the node to register; a node left DOWN or DRAINED by an earlier run is resumed.
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *) echo "slurm setup: node $host is '$state' (see $SLURM_DIR/slurmd.log)" >&2; exit 1 ;;
esac
echo "slurm setup ok: $(sinfo --version), node $host $state"
