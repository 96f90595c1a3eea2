#!/usr/bin/env bash
# Start a small Slurm cluster for tests, as root, entirely under one folder: munged, slurmctld
# and two slurmd on this machine (nodes n1 at 127.0.0.1 and n2 at 127.0.0.2, so multi-node
# jobs are real): `slurm/local/start.sh DIR` (or DTRAIN_SLURM_DIR=DIR). It prints the
# lines to eval (SLURM_CONF=...) and returns once both nodes are idle; stop it with
# `slurm/local/stop.sh DIR`, which ends exactly the daemons whose pid files are in DIR.
#
# Several such clusters may run at once on one machine (other network namespaces share the
# filesystem): each has its own munge key, socket, pid/log/state files and cluster name, and
# never touches /run/munge or /etc/slurm.
set -euo pipefail
dir=${1:-${DTRAIN_SLURM_DIR:?give the cluster folder as an argument or in DTRAIN_SLURM_DIR}}
cpus=${DTRAIN_SLURM_CPUS:-8}          # advertised, not real: SlurmdParameters=config_overrides
mkdir -p "$dir"/{state,spool,log,run,munge}
dir=$(cd "$dir" && pwd)
chmod 700 "$dir/munge"
name=dtrain$(basename "$dir" | tr -cd 'a-z0-9' | tail -c 20)

# Slurm resolves its listening address with AI_ADDRCONFIG, which fails where the only IPv4
# address is 127.0.0.1 (a loopback-only network namespace). A second loopback address fixes it
# for this namespace only; where the check passes (a real host) nothing is changed.
if ! python3 -c 'import socket; socket.getaddrinfo(None, 1, socket.AF_INET, 0, 0, socket.AI_ADDRCONFIG | socket.AI_PASSIVE)' 2>/dev/null; then
  ip addr add 127.0.0.2/8 dev lo
fi

# Three ports nobody in this network namespace uses.
read -r ctld_port slurmd_port slurmd2_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

key=$dir/munge/munge.key
[ -f "$key" ] || { head -c 1024 /dev/urandom > "$key"; chmod 400 "$key"; }
socket=$dir/munge/munge.socket
munged --force --key-file="$key" --socket="$socket" --pid-file="$dir/run/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=$name
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket,cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
SlurmctldParameters=preempt_send_user_signal
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=n1 NodeHostname=n1 NodeAddr=127.0.0.1 Port=$slurmd_port CPUs=$cpus RealMemory=4000
NodeName=n2 NodeHostname=n2 NodeAddr=127.0.0.2 Port=$slurmd2_port CPUs=$cpus RealMemory=4000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N n1
slurmd -f "$SLURM_CONF" -N n2
for _ in $(seq 1 150); do
  if [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" = 2 ]; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm/local/start.sh: the nodes did not become idle in 30 s; see $dir/log" >&2
exit 1
