#!/usr/bin/env bash
# ci/slurm.sh: single-node Slurm cluster on localhost for hpcqueue's tests and
# CI jobs that must submit real jobs (autoalloc, Slurm/PBS backends).
# Adapted from the shared recipe shared/recipes/slurm-single-node.sh.
#
# Partitions: cpu (default, MaxTime=INFINITE) and debug (MaxTime=00:30:00).
# With --multi, also `multi`: three compute nodes n1..n3, each a set of Linux
# namespaces on this machine with its own hostname and address, each running
# its own slurmd (see "Multi-node mode" below).
#
# Target: Debian 12 (bookworm), run as root, no systemd required (the daemons
# are started by hand, so it also works in containers and micro-VMs whose
# PID 1 is not an init system). Debian ships Slurm 22.05.8 in bookworm.
#
# Usage:
#   bash ci/slurm.sh [up]     install if needed, configure, start, wait idle
#                             (keeps the multi-node partition if it is set up)
#   bash ci/slurm.sh up --multi   the same, plus nodes n1..n3 in partition multi
#   bash ci/slurm.sh multi-down   remove the nodes, their namespaces, the bridge
#                             and the /etc/hosts block; back to the single node
#   bash ci/slurm.sh down     stop slurmd + slurmctld and the node slurmds
#                             (munged keeps running)
#   bash ci/slurm.sh restart  down, then up
#   bash ci/slurm.sh status   print daemon PIDs, sinfo and the node state;
#                             exits 1 if the controller does not answer
#
# Exit status: 0 when the cluster is up (for `up`: node idle and, unless
# SLURM_SMOKE_TEST=0, a smoke job COMPLETED); non-zero otherwise, with an
# "ERROR:" line on stderr naming the failed step and the log to read.
#
# Safe to run again: it installs only what is missing, rewrites slurm.conf
# only when its content changes, restarts daemons only when needed, resumes a
# DOWN/DRAINED node, and leaves a healthy running cluster alone.
#
# Settings (environment variables, all optional):
#   SLURM_NODE_CPUS      CPUs the node advertises (default: max(nproc, 8)).
#                        More CPUs than the machine has lets several jobs run
#                        at once on a 2-core CI runner; SlurmdParameters=
#                        config_overrides stops slurmd from draining the node
#                        for "Low socket*core*thread count".
#   SLURM_CLUSTER_NAME   default: localcluster
#   SLURM_SMOKE_TEST     1 (default) submits one trivial job, waits for it
#                        and checks its output; 0 skips it.
#   SLURM_PBS_WRAPPERS   1 installs slurm-wlm-torque (PBS-style qsub/qstat/
#                        qdel wrappers) and enables spank_pbs so jobs also get
#                        PBS_JOBID, PBS_O_WORKDIR, ... Conflicts with the
#                        gridengine-client package (both ship qsub). Default 0.
#                        (Once enabled, rerunning without it keeps spank_pbs.)
#   SLURM_WAIT_SECONDS   how long to wait for the node to become idle (60).
#   SLURM_MULTI_NODE_CPUS  CPUs each multi-node node advertises (default 2; the
#                        nodes share the machine's cores).
#
# Measured on a 2-core bookworm VM: fresh install to first finished job ~20 s
# (11 s with the .debs cached); rerun on a healthy cluster ~1-2 s; `down`
# 0.2-2 s; `restart` ~0.5 s, but slurmctld's first scheduling pass comes ~3 s
# after it starts, so the first job waits that long. Submit-to-start latency
# afterwards is ~1 s. Job ids, queued jobs and finished-job records survive
# `restart` (they live in /var/spool/slurmctld).
# Measured for this script on the 2-core dev VM: fresh `up` 15 s (apt
# included), adding SLURM_PBS_WRAPPERS=1 later 8 s, rerun on a healthy
# cluster 0.7-1 s, `restart` 0.3 s.
#
# PBS wrappers (SLURM_PBS_WRAPPERS=1): sbatch itself honours #PBS -N,
# -l walltime=, -q, -l nodes=N:ppn=M, -o, -e in a script; the qsub wrapper
# prints the bare job id (a normal Slurm id, usable with squeue/scancel) and,
# unless -o/-e are given on its command line, writes <script>.o<id> and
# <script>.e<id> (ignoring #PBS -o / -e / -j oe). qsub reports sbatch errors
# on STDOUT ("There was an error running the Slurm sbatch command. ...") with
# exit 1. qstat -f works; it has no exit_status and no -x; qstat of an
# unknown id prints nothing and exits 153. PBS_NODEFILE is not set. The
# package also points /usr/bin/mpirun (alternatives) at mpiexec.slurm.
#
# What this cluster does NOT have:
#   * accounting: `sacct` prints "Slurm accounting storage is disabled" and
#     exits 1 (that needs slurmdbd + a MariaDB server). Read a finished job's
#     state with `scontrol show job ID` instead; MinJobAge=3600 keeps finished
#     jobs there for an hour.
#   * cgroups: proctrack/cgroup fails in this kind of VM ("cgroup namespace
#     'freezer' not mounted") and the node then drains with "batch job
#     complete failure"; proctrack/linuxproc + task/none are used instead, so
#     memory/CPU limits are not enforced (time limits are).
#
# Multi-node mode (--multi; adapted from shared/recipes/slurm-multi-node-netns.sh):
#   * Bridge slurmbr0 holds 10.77.0.1/24 in the root namespace. Node nI lives in
#     network namespace nI (`ip netns exec n2 ...`) with 10.77.0.(10+I) on its
#     eth0, a veth whose other end (vslurmI) is in the bridge. The nodes have no
#     default route: they reach the other nodes and what listens on 10.77.0.1
#     or 0.0.0.0 in the root namespace, nothing else. 127.0.0.1 on a node is the
#     node's own loopback, so a service on 127.0.0.1 here is out of its reach
#     (which is what tests of "the nodes cannot reach the server" rely on).
#   * Each node's slurmd (`slurmd -N nI`, port 6818 on its own address) runs in
#     its own UTS namespace (hostname nI) and mount namespace, with a private
#     /run (munge's socket bound back in), /var/spool/slurmd and
#     /var/log/slurm, seen from here as $NODES_DIR/nI/{run,spool,log}. It is
#     entered with nsenter, not `ip netns exec`, which remounts /sys without
#     /sys/fs/cgroup (slurmd then exits: "No filesystem mounted on
#     /sys/fs/cgroup"); a fresh sysfs shows the node's own interfaces.
#   * The nodes share everything else with this machine (one kernel, one PID
#     namespace, one file system, as an NFS cluster shares /home), and its cores.
#   * SlurmctldHost becomes localhost(10.77.0.1): the nodes must reach the
#     controller, and their localhost is their own. Clients here go over the
#     bridge too. The NodeName lines of n1..n3 must come before
#     NodeName=localhost: with localhost as the first node record, Slurm
#     resolves every name to it ("fatal: Duplicated NodeHostName n1").
#   * The default partition stays cpu (localhost only): use -p multi.
#   * Names n1..n3 go into /etc/hosts in a marked block.
#   * The mode is remembered in $NODES_DIR/settings: a later plain `up` keeps
#     the nodes; `multi-down` removes them.
#   * Measured on a 2-core VM with the single-node cluster up: `up --multi`
#     ~4 s (slurmctld's first scheduling pass comes ~3 s after a restart),
#     a rerun on a healthy cluster ~1 s; a 3-node job starts in <1 s.
#
# Layout: config /etc/slurm/slurm.conf, logs /var/log/slurm/{slurmctld,slurmd}.log,
# state /var/spool/slurmctld, pid files /run/slurmctld.pid, /run/slurmd.pid,
# /run/munge/munged.pid.

set -Eeuo pipefail   # -E: the ERR trap below also fires inside functions

log() { printf '[ci/slurm.sh] %s\n' "$*"; }
die() { printf '[ci/slurm.sh] ERROR: %s\n' "$*" >&2; exit 1; }
# Any other failing command (set -e) also ends the script: say where.
STEP=init
trap 'rc=$?; printf "[ci/slurm.sh] ERROR: step \"%s\" failed (exit %s at line %s: %s)\n" "$STEP" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit $rc' ERR

[ "$(id -u)" -eq 0 ] || die "run as root"

CONF=/etc/slurm/slurm.conf
NODE=localhost            # NodeName and SlurmctldHost: slurmd accepts "localhost"
                          # whatever the machine's hostname, so slurm.conf does
                          # not depend on it (jobs still see the real hostname).
CLUSTER=${SLURM_CLUSTER_NAME:-localcluster}
WAIT=${SLURM_WAIT_SECONDS:-60}
SMOKE=${SLURM_SMOKE_TEST:-1}
PBS=${SLURM_PBS_WRAPPERS:-0}

# Multi-node mode (see the header). MULTI is 1 with --multi, or when it was set up before.
NODES_DIR=/var/lib/hpcqueue-ci/slurm-nodes
MULTI_TAG=hpcqueue-ci-slurm-nodes
MULTI_NODES=(n1 n2 n3)
MULTI_PART=multi
MULTI_BRIDGE=slurmbr0
MULTI_NET=10.77.0
MULTI_GW=$MULTI_NET.1
MULTI_CPUS=${SLURM_MULTI_NODE_CPUS:-2}
MULTI_MEM=2048
MULTI=0
[ -f "$NODES_DIR/settings" ] && MULTI=1
node_ip() { echo "$MULTI_NET.$(( 10 + ${1#n} ))"; }   # n2 -> 10.77.0.12

# A pid is alive if its /proc entry exists and it is not a zombie (PID 1 in
# some sandboxes reaps exited daemons late, so `kill -0` alone is not enough).
alive() {
    local pid=$1
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
pid_of() { [ -r "$1" ] && cat "$1" 2>/dev/null || true; }

install_packages() {
    local pkgs=(slurmctld slurmd slurm-client munge)
    [ "$MULTI" = 1 ] && pkgs+=(iproute2 util-linux)
    [ "$PBS" = 1 ] && pkgs+=(slurm-wlm-torque)
    if [ "$PBS" = 1 ] && dpkg-query -W -f='${Status}' gridengine-client 2>/dev/null | grep -q 'install ok installed'; then
        die "SLURM_PBS_WRAPPERS=1 conflicts with the installed gridengine-client (both ship qsub); remove one"
    fi
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed: ${pkgs[*]}"
        return
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Fresh images often have no package lists; update only when needed.
    if ! apt-cache show slurmctld >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q
    fi
    # --no-install-recommends skips ~30 optional plugin/-dev packages.
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_hostname_resolves() {
    # slurmd resolves the machine's own hostname at start-up; if that fails
    # it retries getaddrinfo() 10 times, one second apart ("get_addr_info:
    # getaddrinfo() failed: Name or service not known"), then carries on.
    # Mapping the hostname to loopback removes the 10 s delay.
    local h
    h=$(hostname)
    if getent hosts "$h" >/dev/null 2>&1; then
        log "hostname $h resolves"
    else
        log "hostname $h does not resolve; adding '127.0.0.1 $h' to /etc/hosts"
        printf '127.0.0.1 %s\n' "$h" >>/etc/hosts
    fi
}

start_munge() {
    # The munge package's postinst normally creates the key; make sure it
    # exists and has the permissions munged insists on (0400, owner munge),
    # otherwise munged exits with "Keyfile is insecure".
    install -d -o munge -g munge -m 0700 /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0700 /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    # systemd would create /run/munge (RuntimeDirectory=); without it munged
    # fails with 'Failed to check socket dir "/run/munge"'.
    install -d -o munge -g munge -m 0755 /run/munge

    if alive "$(pid_of /run/munge/munged.pid)" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running (pid $(pid_of /run/munge/munged.pid))"
        return
    fi
    log "starting munged as user munge"
    # munged must not run as root with munge-owned files ("Logfile is
    # insecure ... should be owned by UID 0"), so run it as munge.
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        munge -n </dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not work; see /var/log/munge/munged.log"
    log "munged running (pid $(pid_of /run/munge/munged.pid))"
}

write_config() {
    local real_cpus cpus mem tmp ctld_host=$NODE n
    real_cpus=$(nproc)
    cpus=${SLURM_NODE_CPUS:-$(( real_cpus > 8 ? real_cpus : 8 ))}
    # RealMemory must not exceed what slurmd detects, or the node is set to
    # INVAL/DRAIN ("Low RealMemory"); use what slurmd itself reports.
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1) || true
    [ -n "$mem" ] || mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 ))

    install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    # the nodes reach the controller over the bridge (their localhost is their own)
    [ "$MULTI" = 1 ] && ctld_host="$NODE($MULTI_GW)"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Generated by hpcqueue ci/slurm.sh: single-node test cluster on localhost.
ClusterName=$CLUSTER
SlurmctldHost=$ctld_host
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
# No cgroups: they do not work in this kind of VM/container (see script header).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Default batch_sched_delay=3 makes a job submitted right after another one
# finished wait ~3 s; 0 brings submit-to-start latency to ~1 s.
SchedulerParameters=batch_sched_delay=0
# No accounting database: sacct does not work, use scontrol show job.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Keep finished jobs visible to scontrol/squeue -t all for an hour.
MinJobAge=3600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Reject at submit time a job that exceeds a partition limit (e.g. --time
# over the debug partition's 30 min) instead of leaving it pending forever
# with reason PartitionTimeLimit, as most production sites do.
EnforcePartLimits=ALL
# A DOWN node returns to service as soon as slurmd registers again.
ReturnToService=2
# Accept the advertised CPU count even if it exceeds the hardware.
SlurmdParameters=config_overrides
EOF
    if [ "$MULTI" = 1 ]; then
        # before NodeName=$NODE: see "Duplicated NodeHostName" in the header
        echo "# Multi-node mode: nodes in network namespaces (ci/slurm.sh multi-down removes them)" >>"$tmp"
        for n in "${MULTI_NODES[@]}"; do
            echo "NodeName=$n NodeAddr=$(node_ip "$n") CPUs=$MULTI_CPUS RealMemory=$MULTI_MEM State=UNKNOWN" >>"$tmp"
        done
    fi
    cat >>"$tmp" <<EOF
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=debug Nodes=$NODE Default=NO MaxTime=00:30:00 State=UP
EOF
    if [ "$MULTI" = 1 ]; then
        echo "PartitionName=$MULTI_PART Nodes=n[1-${#MULTI_NODES[@]}] Default=NO MaxTime=INFINITE State=UP" >>"$tmp"
    fi
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        log "$CONF unchanged (node $NODE, CPUs=$cpus on $real_cpus real, RealMemory=$mem MB)"
        CONFIG_CHANGED=0
    else
        [ -f "$CONF" ] && cp "$CONF" "$CONF.bak"
        mv "$tmp" "$CONF"
        chmod 0644 "$CONF"
        log "wrote $CONF (node $NODE, CPUs=$cpus on $real_cpus real, RealMemory=$mem MB, partitions cpu*, debug$([ "$MULTI" = 1 ] && echo ", $MULTI_PART: ${MULTI_NODES[*]}"))"
        CONFIG_CHANGED=1
    fi
    # A state directory left by another ClusterName makes slurmctld exit with
    # "fatal: CLUSTER NAME MISMATCH"; this file is how it notices.
    if [ -f /var/spool/slurmctld/clustername ] && [ "$(cat /var/spool/slurmctld/clustername)" != "$CLUSTER" ]; then
        log "state in /var/spool/slurmctld belongs to another cluster name; clearing it"
        rm -rf /var/spool/slurmctld/*
    fi

    if [ "$PBS" = 1 ]; then
        # spank_pbs sets PBS_JOBID, PBS_JOBNAME, PBS_O_WORKDIR, ... in jobs.
        install -d /etc/slurm/plugstack.conf.d
        echo "required spank_pbs.so" >/etc/slurm/plugstack.conf.d/pbs.conf
        log "PBS wrappers: qsub/qstat/qdel from slurm-wlm-torque, spank_pbs enabled"
    fi
}

# ---------------------------------------------------------------- multi-node mode
hosts_without_block() {
    awk -v tag="$MULTI_TAG" '$0 == "# BEGIN " tag {s=1; next} s && $0 == "# END " tag {s=0; next} !s' /etc/hosts
}

setup_nodes_network() {
    local n vh tmp
    ip link show "$MULTI_BRIDGE" >/dev/null 2>&1 || { ip link add "$MULTI_BRIDGE" type bridge; log "created bridge $MULTI_BRIDGE"; }
    ip link set "$MULTI_BRIDGE" up
    ip -4 addr show dev "$MULTI_BRIDGE" | grep -q "inet $MULTI_GW/24" || ip addr add "$MULTI_GW/24" dev "$MULTI_BRIDGE"
    for n in "${MULTI_NODES[@]}"; do
        vh=vslurm${n#n}
        [ -e "/run/netns/$n" ] || { ip netns add "$n"; log "created network namespace $n"; }
        if ! ip -n "$n" link show eth0 >/dev/null 2>&1; then
            ip link del "$vh" 2>/dev/null || true
            ip link add "$vh" type veth peer name eth0 netns "$n"
        fi
        ip link set "$vh" master "$MULTI_BRIDGE" up
        ip -n "$n" link set lo up
        ip -n "$n" -4 addr show dev eth0 | grep -q "inet $(node_ip "$n")/24" || ip -n "$n" addr add "$(node_ip "$n")/24" dev eth0
        ip -n "$n" link set eth0 up
    done
    # names of the nodes, in a marked block; written in place (/etc/hosts may be a bind mount)
    tmp=$(mktemp)
    { hosts_without_block
      echo "# BEGIN $MULTI_TAG"
      for n in "${MULTI_NODES[@]}"; do echo "$(node_ip "$n") $n"; done
      echo "# END $MULTI_TAG"; } >"$tmp"
    cmp -s "$tmp" /etc/hosts || { cat "$tmp" >/etc/hosts; log "/etc/hosts: ${MULTI_NODES[*]} -> $(node_ip n1)..."; }
    rm -f "$tmp"
    for n in "${MULTI_NODES[@]}"; do
        [ "$(getent hosts "$n" | awk '{print $1; exit}')" = "$(node_ip "$n")" ] \
            || die "$n does not resolve to $(node_ip "$n") (another /etc/hosts entry?)"
    done
    install -d -m 0755 "$NODES_DIR"
    echo "nodes=${MULTI_NODES[*]} partition=$MULTI_PART bridge=$MULTI_BRIDGE net=$MULTI_NET.0/24" >"$NODES_DIR/settings"
}

node_pid() { pid_of "$NODES_DIR/$1/run/slurmd.pid"; }

# One node's slurmd in the node's namespaces (see the header). The per-node dirs
# stand in for /run, /var/spool/slurmd and /var/log/slurm of slurm.conf.
start_node() {
    local n=$1 d=$NODES_DIR/$1
    install -d -m 0755 "$d/run" "$d/spool" "$d/log" "$d/hold/munge" "$d/hold/cgroup"
    install -d -m 1777 "$d/run/lock"
    rm -f "$d/run/slurmd.pid"
    nsenter --net="/run/netns/$n" -- unshare --uts --mount --propagation private -- \
        /bin/sh -ec '
        n=$1 d=$2
        hostname "$n"
        # keep the munge socket dir and the cgroup tree while /run and /sys change
        mount --bind /run/munge "$d/hold/munge"
        mount --rbind /sys/fs/cgroup "$d/hold/cgroup"
        mount -t sysfs sysfs /sys                  # /sys/class/net: this namespace
        mount --move "$d/hold/cgroup" /sys/fs/cgroup
        mount --bind "$d/run" /run
        mount --bind "$d/spool" /var/spool/slurmd
        mount --bind "$d/log" /var/log/slurm
        mkdir -p /run/munge
        mount --move "$d/hold/munge" /run/munge
        exec slurmd -N "$n"' sh "$n" "$d"
    for _ in $(seq 50); do alive "$(node_pid "$n")" && break; sleep 0.1; done
    alive "$(node_pid "$n")" || die "slurmd of node $n did not start; see $d/log/slurmd.log"
    STARTED_AT[$n]=$(date +%s)
}

start_nodes() {
    local n started=()
    [ "$MULTI" = 1 ] || return 0
    for n in "${MULTI_NODES[@]}"; do
        alive "$(node_pid "$n")" || { start_node "$n"; started+=("$n"); }
    done
    if [ ${#started[@]} -gt 0 ]; then log "started slurmd in nodes ${started[*]}"; else log "node slurmds already running"; fi
}

# Stop the node slurmds (slurmctld's `scontrol shutdown` has usually done it); with
# "all", also every process left in their network namespaces (job steps).
stop_nodes() {
    local n p pids=() left
    for n in "${MULTI_NODES[@]}"; do
        p=$(node_pid "$n")
        alive "$p" && { kill "$p" 2>/dev/null || true; pids+=("$p"); }
    done
    [ ${#pids[@]} -gt 0 ] && log "stopping node slurmds (pids ${pids[*]})"
    for _ in $(seq 50); do
        left=0; for p in "${pids[@]}"; do alive "$p" && left=1; done
        [ $left = 0 ] && break; sleep 0.1
    done
    [ "${1:-}" = all ] || return 0
    for n in "${MULTI_NODES[@]}"; do
        [ -e "/run/netns/$n" ] || continue
        for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
        for _ in $(seq 30); do [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && break; sleep 0.1; done
        for p in $(ip netns pids "$n" 2>/dev/null); do log "pid $p in $n still alive, SIGKILL"; kill -9 "$p" 2>/dev/null || true; done
    done
}

multi_down() {
    local n tmp
    if [ ! -f "$NODES_DIR/settings" ]; then
        log "multi-node mode is not set up"
        return
    fi
    if scontrol ping >/dev/null 2>&1 && [ -n "$(squeue -h -p "$MULTI_PART" -o %i 2>/dev/null)" ]; then
        log "cancelling the jobs of partition $MULTI_PART"
        scancel -p "$MULTI_PART" || true
    fi
    stop_nodes all
    rm -f "$NODES_DIR/settings"
    MULTI=0
    # back to the single-node slurm.conf; the controller moves back to localhost
    write_config
    start_slurm
    wait_idle
    for n in "${MULTI_NODES[@]}"; do
        [ -e "/run/netns/$n" ] && { ip netns del "$n"; log "deleted network namespace $n"; }
        ip link del "vslurm${n#n}" 2>/dev/null || true
        rm -rf "${NODES_DIR:?}/$n/run" "${NODES_DIR:?}/$n/spool" "${NODES_DIR:?}/$n/hold"
    done
    ip link show "$MULTI_BRIDGE" >/dev/null 2>&1 && { ip link del "$MULTI_BRIDGE"; log "deleted bridge $MULTI_BRIDGE"; }
    if grep -qx "# BEGIN $MULTI_TAG" /etc/hosts; then
        tmp=$(mktemp); hosts_without_block >"$tmp"; cat "$tmp" >/etc/hosts; rm -f "$tmp"
        log "removed the nodes from /etc/hosts"
    fi
    log "multi-node mode removed (node logs kept in $NODES_DIR/<node>/log)"
}

stop_slurm() {
    local ctld slurmd
    ctld=$(pid_of /run/slurmctld.pid); slurmd=$(pid_of /run/slurmd.pid)
    if ! alive "$ctld" && ! alive "$slurmd"; then
        log "slurmctld/slurmd not running"
        return
    fi
    log "stopping slurmd (pid ${slurmd:-none}) and slurmctld (pid ${ctld:-none})"
    # `scontrol shutdown` stops slurmctld and every slurmd in ~2 s; fall back
    # to SIGTERM by pid if the controller does not answer.
    scontrol shutdown >/dev/null 2>&1 || { alive "$slurmd" && kill "$slurmd"; alive "$ctld" && kill "$ctld"; } || true
    for _ in $(seq 100); do
        alive "$ctld" || alive "$slurmd" || break
        sleep 0.1
    done
    for p in "$slurmd" "$ctld"; do
        if alive "$p"; then log "pid $p still alive, sending SIGKILL"; kill -9 "$p" || true; fi
    done
    stop_nodes
    log "stopped"
}

start_slurm() {
    local ctld slurmd
    ctld=$(pid_of /run/slurmctld.pid); slurmd=$(pid_of /run/slurmd.pid)
    if alive "$ctld" && alive "$slurmd" && [ "${CONFIG_CHANGED:-0}" = 0 ] && scontrol ping >/dev/null 2>&1; then
        log "slurmctld (pid $ctld) and slurmd (pid $slurmd) already running with this config"
        return
    fi
    if alive "$ctld" || alive "$slurmd"; then
        log "restarting daemons (config changed or one daemon missing)"
        stop_slurm
    fi
    log "starting slurmctld"
    slurmctld            # daemonizes; log in /var/log/slurm/slurmctld.log
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
    scontrol ping >/dev/null 2>&1 || die "slurmctld did not come up; see /var/log/slurm/slurmctld.log"
    log "starting slurmd"
    # slurmd logs harmless "mpi/pmix ... can not load PMIx library" errors.
    STARTED_AT[$NODE]=$(date +%s)
    slurmd
    for _ in $(seq 50); do alive "$(pid_of /run/slurmd.pid)" && break; sleep 0.1; done
    log "slurmctld pid $(pid_of /run/slurmctld.pid), slurmd pid $(pid_of /run/slurmd.pid)"
}

# True once the slurmd we started on node $1 has registered with slurmctld.
# Right after a restart slurmctld reports the node state saved in
# StateSaveLocation (often "idle") before slurmd has registered; jobs would then
# sit pending for a few seconds, so compare the SlurmdStartTime slurmctld
# reports with ours.
registered() {
    local node=$1 t
    [ -n "${STARTED_AT[$node]:-}" ] || return 0
    t=$(scontrol show node "$node" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [ -n "$t" ] && [ "$t" != None ] || return 1
    [ "$(date -d "$t" +%s 2>/dev/null || echo 0)" -ge $(( STARTED_AT[$node] - 1 )) ]
}

all_nodes() { echo "$NODE"; [ "$MULTI" = 1 ] && printf '%s\n' "${MULTI_NODES[@]}"; return 0; }

wait_idle() {
    local state reason node pending nodes
    nodes=$(all_nodes | tr '\n' ' ')
    log "waiting up to ${WAIT}s for nodes to be idle: $nodes"
    for _ in $(seq $(( WAIT * 2 ))); do
        pending=0
        for node in $nodes; do
            # `|| true`: with pipefail a failing sinfo (controller busy) would
            # otherwise end the script instead of being retried.
            state=$(sinfo -h -n "$node" -N -o '%T' 2>/dev/null | head -1) || true
            case "$state" in
                idle|mixed|allocated|completing)
                    registered "$node" || pending=1 ;;
                *drain*|*down*|*fail*|inval*)
                    # Drain/down reasons survive restarts in StateSaveLocation
                    # (e.g. "batch job complete failure", "Not responding",
                    # "Low socket*core*thread count"); clear them.
                    pending=1
                    reason=$(sinfo -h -n "$node" -N -o '%E' 2>/dev/null | head -1) || true
                    log "node $node is $state ($reason); resuming it"
                    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
                # "idle*" / "unknown*" (not responding yet) just needs more time.
                *) pending=1 ;;
            esac
        done
        if [ $pending = 0 ]; then log "nodes idle: $nodes"; return; fi
        sleep 0.5
    done
    sinfo -N -l || true
    die "nodes did not become idle; see /var/log/slurm/slurmd.log, slurmctld.log and $NODES_DIR/<node>/log/"
}

# Submit a job, wait for it to end; its state in STATE. Args: output file, sbatch args.
run_job() {
    local out=$1 jid; shift
    jid=$(cd "$(dirname "$out")" && sbatch --parsable --time=1 --output="$out" "$@")
    # Poll scontrol (sbatch --wait polls only every few seconds).
    for _ in $(seq 300); do
        STATE=$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p') || true
        case "$STATE" in PENDING|CONFIGURING|RUNNING|COMPLETING|"") sleep 0.1 ;; *) break ;; esac
    done
    JID=$jid
}

smoke_test() {
    [ "$SMOKE" = 1 ] || return 0
    local dir out want
    dir=$(mktemp -d)
    log "smoke test: submit a trivial batch job and wait for it"
    run_job "$dir/out" --wrap 'echo smoke-ok on $(hostname)'
    [ "$STATE" = COMPLETED ] || die "smoke job $JID ended as ${STATE:-unknown}: $(cat "$dir/out" 2>/dev/null)"
    out=$(cat "$dir/out")
    [[ "$out" == smoke-ok* ]] || die "smoke job $JID wrote unexpected output: $out"
    log "smoke job $JID: $out"
    if [ "$MULTI" = 1 ]; then
        # one step per node, each with its own hostname
        run_job "$dir/multi" -p "$MULTI_PART" -N "${#MULTI_NODES[@]}" --wrap 'srun hostname'
        out=$(sort -u "$dir/multi" 2>/dev/null | tr '\n' ' ')
        want=$(printf '%s\n' "${MULTI_NODES[@]}" | sort | tr '\n' ' ')
        [ "$STATE" = COMPLETED ] && [ "$out" = "$want" ] \
            || die "smoke job $JID (-p $MULTI_PART) ended as ${STATE:-unknown} with output: $(cat "$dir/multi" 2>/dev/null)"
        log "smoke job $JID (-p $MULTI_PART -N ${#MULTI_NODES[@]}, srun hostname): $out"
    fi
    rm -rf "$dir"
}

status() {
    local n
    log "munged pid: $(pid_of /run/munge/munged.pid)  slurmctld pid: $(pid_of /run/slurmctld.pid)  slurmd pid: $(pid_of /run/slurmd.pid)"
    if [ "$MULTI" = 1 ]; then
        for n in "${MULTI_NODES[@]}"; do
            log "node $n: $(ip -n "$n" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}'), slurmd pid $(node_pid "$n")$(alive "$(node_pid "$n")" || echo ' (not running)')"
        done
    fi
    if ! command -v scontrol >/dev/null 2>&1 || ! scontrol ping >/dev/null 2>&1; then
        log "slurmctld is not answering (run: bash ci/slurm.sh up)"
        return 1
    fi
    sinfo
    scontrol show node "$NODE" | grep -E 'State=|Reason=|CPUTot=' || true
}

declare -A STARTED_AT=()
command=${1:-up}
[ $# -gt 0 ] && shift
for arg in "$@"; do
    case "$arg" in
        --multi) MULTI=1 ;;
        *) die "unknown argument $arg (usage: $0 [up [--multi]|multi-down|down|restart|status])" ;;
    esac
done

case "$command" in
    up)
        start_ts=$(date +%s)
        STEP=install_packages;         install_packages
        STEP=ensure_hostname_resolves; ensure_hostname_resolves
        STEP=start_munge;              start_munge
        if [ "$MULTI" = 1 ]; then
            STEP=setup_nodes_network;  setup_nodes_network
        fi
        STEP=write_config;             write_config
        STEP=start_slurm;              start_slurm
        STEP=start_nodes;              start_nodes
        STEP=wait_idle;                wait_idle
        STEP=smoke_test;               smoke_test
        STEP=status;                   status
        log "ready in $(( $(date +%s) - start_ts ))s (partitions: cpu [default], debug [MaxTime 30 min]$([ "$MULTI" = 1 ] && echo ", $MULTI_PART [${MULTI_NODES[*]}]"))"
        ;;
    multi-down) STEP=multi_down; multi_down ;;
    down) STEP=down; stop_slurm ;;
    restart)
        STEP=stop_slurm;               stop_slurm
        STEP=ensure_hostname_resolves; ensure_hostname_resolves
        STEP=start_munge;              start_munge
        CONFIG_CHANGED=0
        STEP=start_slurm;              start_slurm
        STEP=start_nodes;              start_nodes
        STEP=wait_idle;                wait_idle
        log "restarted"
        ;;
    status)
        # Tested in an `if` so that a down cluster exits 1 without the ERR trap's message.
        if status; then exit 0; else exit 1; fi ;;
    *) die "usage: $0 [up [--multi]|multi-down|down|restart|status]" ;;
esac
