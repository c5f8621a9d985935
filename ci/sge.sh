#!/usr/bin/env bash
# ci/sge.sh: single-host Son of Grid Engine 8.1.9 (qmaster + execd) on this
# machine for hpcqueue's tests that must submit real Grid Engine jobs (the
# `sge` scheduler dialect, the DRMAA transport through PyPI `drmaa` and
# Debian's libdrmaa). Adapted from the shared recipe
# shared/recipes/sge-single-node.sh.
#
# Queue all.q (slots max(nproc, 8), h_rt unlimited) with parallel
# environment smp; root may submit; the scheduler runs every second.
#
# Target: Debian 12 (bookworm), run as root, no systemd required (daemons are
# started through their SysV init scripts, called directly). It coexists with
# the Slurm of ci/slurm.sh (different ports: 6444/6445 against 6817/6818).
# gridengine-client conflicts with slurm-wlm-torque (both ship /usr/bin/qsub,
# qstat, qdel): run ci/pbs-wrappers.sh first, which removes that package and
# puts the PBS wrappers in /opt/hpcqueue-ci/pbs/bin instead.
#
# Usage:
#   bash ci/sge.sh [up]     install if needed, configure, start, smoke test
#   bash ci/sge.sh down     stop execd and qmaster
#   bash ci/sge.sh status   print daemon PIDs and `qstat -f`; exits 1 if the
#                           qmaster does not answer
#
# Exit status: 0 when the cluster is up (for `up`: queue instance ready and,
# unless SGE_SMOKE_TEST=0, a smoke job passed); non-zero otherwise, with an
# "ERROR:" line on stderr naming the failed step and the log to read.
#
# Safe to run again: installs only what is missing, re-applies the same
# configuration, starts only daemons that are not running.
#
# Settings (environment variables, all optional):
#   SGE_SLOTS             slots of all.q (default: max(nproc, 8))
#   SGE_SMOKE_TEST        1 (default) runs `qsub -sync y` on a trivial job
#   SGE_REMOVE_CONFLICTS  if slurm-wlm-torque is installed as a package the
#                         script refuses (apt would remove it to install
#                         gridengine-client) unless this is 1. Running
#                         ci/pbs-wrappers.sh first is the better fix.
#
# Using it afterwards (`source ci/sge.env` sets these): the clients in
# /usr/bin find SGE_ROOT by themselves; the DRMAA library does not:
#   export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
#   export DRMAA_LIBRARY_PATH=/usr/lib/gridengine-drmaa/lib/libdrmaa.so.1.0
#   # libdrmaa links libjemalloc, and dlopen() of it from Python fails with
#   # "libjemalloc.so.2: cannot allocate memory in static TLS block" unless
#   # the process starts with more optional static TLS:
#   export GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384
#   # (LD_PRELOAD=/lib/x86_64-linux-gnu/libjemalloc.so.2 also works)
# With /opt/hpcqueue-ci/pbs/bin on PATH, `qsub` is Slurm's PBS wrapper: call
# Grid Engine's as /usr/bin/qsub, /usr/bin/qstat, /usr/bin/qdel (this script
# does, through PATH=/usr/bin:...).
#
# Pitfalls this script handles:
#   * qmaster rejects clients with "access denied (client IP resolved to host
#     name "localhost". This is not identical to clients host name ...)" when
#     the hostname maps to 127.0.0.1: a host_aliases file fixes it.
#   * root's jobs are rejected ("your user id 0 is lower than minimum user id
#     1000"): min_uid/min_gid are set to 0. The execd reads the global config
#     only at start-up, so it is (re)started after the change.
#   * the default scheduler interval is 15 s; it is set to 1 s.
#   * `qacct -j ID` finds a finished job only after reporting_params'
#     flush_time (15 s); accounting_flush_time=00:00:00 makes it immediate.
#   * another apt/dpkg running at the same time: apt waits for its lock.
# Pitfall left to the caller: `qsub -b y 'cmd with spaces'` without -N fails
# with the unhelpful "Unable to run job: Error reading answer list from
# qmaster" (the default job name contains a space). Always pass -N.
#
# Measured on the 2-core dev VM (Slurm running, apt lists present): fresh
# `up` 15 s (apt ~10 s of it), rerun on a healthy cluster 3 s (mostly the
# smoke job), `up` after `down` 5-6 s, `down` 10 s (sge_qmaster's controlled
# shutdown takes ~8 s, whether by `qconf -km` or SIGTERM).
#
# Layout: SGE_ROOT /var/lib/gridengine, cell "default" (common/act_qmaster,
# host_aliases), spool /var/spool/gridengine (qmaster/messages,
# execd/<host>/messages), pid files /var/spool/gridengine/qmaster/qmaster.pid
# and /run/gridengine/execd.pid.

set -Eeuo pipefail

log() { printf '[ci/sge.sh] %s\n' "$*"; }
die() { printf '[ci/sge.sh] ERROR: %s\n' "$*" >&2; exit 1; }
STEP=init
trap 'rc=$?; printf "[ci/sge.sh] ERROR: step \"%s\" failed (exit %s at line %s: %s)\n" "$STEP" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit $rc' ERR

[ "$(id -u)" -eq 0 ] || die "run as root"

# Grid Engine's clients, not the PBS wrappers of ci/pbs-wrappers.sh.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
QMASTER_PID=/var/spool/gridengine/qmaster/qmaster.pid   # written by sge_qmaster
EXECD_PID=/run/gridengine/execd.pid                     # set by the init script
SMOKE=${SGE_SMOKE_TEST:-1}
HOST=$(hostname)
APT_LOCK="-o DPkg::Lock::Timeout=300"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

alive() {
    local pid=$1
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
pid_of() { [ -r "$1" ] && cat "$1" 2>/dev/null || true; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

ensure_hostname_resolves() {
    # Every SGE daemon and client resolves the hostname; unresolvable means
    # "can't resolve hostname" errors everywhere.
    if getent hosts "$HOST" >/dev/null 2>&1; then
        log "hostname $HOST resolves to $(getent hosts "$HOST" | awk '{print $1; exit}')"
    else
        log "hostname $HOST does not resolve; adding '127.0.0.1 $HOST' to /etc/hosts"
        printf '127.0.0.1 %s\n' "$HOST" >>/etc/hosts
    fi
}

install_packages() {
    local pkgs=(gridengine-master gridengine-exec gridengine-client gridengine-drmaa1.0)
    local missing=()
    for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed: ${pkgs[*]}"
        return
    fi
    if installed slurm-wlm-torque && [ "${SGE_REMOVE_CONFLICTS:-0}" != 1 ]; then
        die "slurm-wlm-torque is installed and conflicts with gridengine-client (both provide qsub); run 'bash ci/pbs-wrappers.sh' first (keeps the PBS wrappers in /opt/hpcqueue-ci/pbs/bin), or set SGE_REMOVE_CONFLICTS=1 to let apt remove it"
    fi
    # Answer the debconf questions: let the package create the cell
    # ("default", spool /var/spool/gridengine/spooldb) with this host as master.
    log "preseeding debconf (master host $HOST, cell default)"
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $HOST
EOF
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show gridengine-master >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q $APT_LOCK
    fi
    log "installing: ${missing[*]}"
    # policy-rc.d (containers) or the lack of a runlevel stops the packages
    # from starting the daemons; they are started below.
    apt-get install -y -q $APT_LOCK --no-install-recommends "${missing[@]}"
    [ -f "$COMMON/act_qmaster" ] || die "$COMMON/act_qmaster missing: the package did not initialise the cell"
}

configure_files() {
    echo "$HOST" >"$COMMON/act_qmaster"
    # First name is the canonical one; connections from 127.0.0.1 are
    # reverse-resolved to "localhost" and must count as this host.
    local want="$HOST localhost"
    if [ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$want" ]; then
        echo "$want" >"$COMMON/host_aliases"
        log "wrote $COMMON/host_aliases: $want"
        # qmaster reads host_aliases at start-up only.
        stop_daemons
    fi
}

start_qmaster() {
    if alive "$(pid_of "$QMASTER_PID")" && qconf -sh >/dev/null 2>&1; then
        log "sge_qmaster already running (pid $(pid_of "$QMASTER_PID"))"
        return
    fi
    log "starting sge_qmaster"
    /etc/init.d/gridengine-master start
    for _ in $(seq 150); do qconf -sh >/dev/null 2>&1 && break; sleep 0.2; done
    qconf -sh >/dev/null 2>&1 || die "qmaster does not answer; see /var/spool/gridengine/qmaster/messages"
    log "sge_qmaster pid $(pid_of "$QMASTER_PID")"
}

# qconf -A* adds, -M* modifies; use whichever applies so reruns are harmless.
apply() {  # apply <show-option> <name> <add-option> <modify-option> <file>
    local op=$3 out
    qconf "$1" "$2" >/dev/null 2>&1 && op=$4
    out=$(qconf "$op" "$5" 2>&1) || die "qconf $op $5 failed: $out"
}

configure_cluster() {
    local slots=${SGE_SLOTS:-$(( $(nproc) > 8 ? $(nproc) : 8 ))}
    local changed=0

    # Global config: allow root's jobs. qconf -Mconf takes the config name
    # from the file name, so the file must be called "global".
    qconf -sconf global >"$WORK/global"
    if ! grep -qE '^min_uid +0$' "$WORK/global" || ! grep -qE '^min_gid +0$' "$WORK/global"; then
        sed -i -e 's/^min_uid .*/min_uid                      0/' -e 's/^min_gid .*/min_gid                      0/' "$WORK/global"
        qconf -Mconf "$WORK/global" >/dev/null 2>&1 || die "qconf -Mconf global failed"
        changed=1
        log "global config: min_uid=0 min_gid=0 (root may run jobs)"
    fi

    # Accounting: qmaster writes finished jobs to common/accounting (read by
    # `qacct -j ID`) only every flush_time (15 s by default); write them at
    # once. qmaster reads this without a restart. `qconf -sconf` folds the
    # value over two lines with a trailing backslash: drop them all.
    if ! grep -q 'accounting_flush_time=00:00:00' "$WORK/global"; then
        qconf -sconf global | awk '/^reporting_params/ {skip=1} skip {if ($0 !~ /\\$/) skip=0; next} {print}' >"$WORK/global"
        echo "reporting_params             accounting=true reporting=false flush_time=00:00:15 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00" >>"$WORK/global"
        qconf -Mconf "$WORK/global" >/dev/null 2>&1 || die "qconf -Mconf global (reporting_params) failed"
        log "global config: accounting_flush_time=00:00:00 (qacct sees a finished job at once)"
    fi

    # Scheduler: run every second instead of every 15 s.
    qconf -ssconf >"$WORK/sched"
    sed -i -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
           -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
           -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' "$WORK/sched"
    qconf -Msconf "$WORK/sched" >/dev/null 2>&1 || die "qconf -Msconf failed"
    log "scheduler: schedule_interval 1 s"

    qconf -ss 2>/dev/null | grep -qx "$HOST" || qconf -as "$HOST" >/dev/null 2>&1
    qconf -sh 2>/dev/null | grep -qx "$HOST" || qconf -ah "$HOST" >/dev/null 2>&1
    log "$HOST is admin and submit host"

    cat >"$WORK/exechost" <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
    apply -se "$HOST" -Ae -Me "$WORK/exechost"

    printf 'group_name @allhosts\nhostlist %s\n' "$HOST" >"$WORK/allhosts"
    apply -shgrp @allhosts -Ahgrp -Mhgrp "$WORK/allhosts"

    # Parallel environment for `qsub -pe smp N`.
    cat >"$WORK/smp" <<EOF
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    apply -sp smp -Ap -Mp "$WORK/smp"

    # Queue all.q from the built-in template. load_thresholds NONE: a busy
    # 2-core runner would otherwise put the queue in alarm state and stop
    # dispatching.
    qconf -sq >"$WORK/all.q"
    sed -i -e 's/^qname .*/qname                 all.q/' \
           -e 's/^hostlist .*/hostlist              @allhosts/' \
           -e "s/^slots .*/slots                 $slots/" \
           -e 's/^pe_list .*/pe_list               smp/' \
           -e 's/^load_thresholds .*/load_thresholds       NONE/' \
           -e 's#^shell .*#shell                 /bin/bash#' \
           -e 's/^shell_start_mode .*/shell_start_mode      unix_behavior/' "$WORK/all.q"
    apply -sq all.q -Aq -Mq "$WORK/all.q"
    log "queue all.q on @allhosts ($HOST) with $slots slots, pe smp"

    GLOBAL_CHANGED=$changed
}

start_execd() {
    local pid
    pid=$(pid_of "$EXECD_PID")
    if alive "$pid" && [ "${GLOBAL_CHANGED:-0}" = 1 ]; then
        log "restarting sge_execd so it picks up the new global config"
        qconf -ke "$HOST" >/dev/null 2>&1 || kill "$pid" || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    fi
    if alive "$(pid_of "$EXECD_PID")"; then
        log "sge_execd already running (pid $(pid_of "$EXECD_PID"))"
    else
        log "starting sge_execd"
        /etc/init.d/gridengine-exec start
    fi
    log "waiting for queue instance all.q@$HOST to report load"
    local line
    for _ in $(seq 150); do
        line=$(qstat -f -q all.q 2>/dev/null | grep "^all.q@" || true)
        # columns: queuename qtype resv/used/tot load_avg arch [states]
        if [ -n "$line" ] && [ "$(awk '{print $4}' <<<"$line")" != "-NA-" ] && [ -z "$(awk '{print $6}' <<<"$line")" ]; then
            log "queue ready: $line"
            return
        fi
        sleep 0.2
    done
    qstat -f || true
    die "queue instance not ready; see /var/spool/gridengine/execd/*/messages"
}

smoke_test() {
    [ "$SMOKE" = 1 ] || return 0
    log "smoke test: qsub -sync y a trivial job"
    (cd "$WORK" && timeout 120 qsub -sync y -N smoke -b y -o "$WORK/smoke.out" -j y 'echo smoke-ok on $(hostname)') >"$WORK/qsub.out" 2>&1 \
        || die "smoke job failed: $(cat "$WORK/qsub.out")"
    grep -q '^smoke-ok' "$WORK/smoke.out" || die "smoke job wrote: $(cat "$WORK/smoke.out")"
    log "$(tail -1 "$WORK/qsub.out"): $(cat "$WORK/smoke.out")"
}

stop_daemons() {
    local q e
    q=$(pid_of "$QMASTER_PID"); e=$(pid_of "$EXECD_PID")
    if ! alive "$q" && ! alive "$e"; then
        log "sge daemons not running"
        return
    fi
    log "stopping sge_execd (pid ${e:-none}) and sge_qmaster (pid ${q:-none})"
    if alive "$e"; then qconf -ke "$HOST" >/dev/null 2>&1 || kill "$e" || true; fi
    if alive "$q"; then qconf -km >/dev/null 2>&1 || kill "$q" || true; fi
    for _ in $(seq 300); do
        alive "$q" || alive "$e" || break
        sleep 0.1
    done
    for p in "$e" "$q"; do
        if alive "$p"; then log "pid $p still alive, sending SIGKILL"; kill -9 "$p" || true; fi
    done
    rm -f "$EXECD_PID"
    log "stopped"
}

status() {
    log "sge_qmaster pid: $(pid_of "$QMASTER_PID")  sge_execd pid: $(pid_of "$EXECD_PID")"
    if ! command -v qconf >/dev/null 2>&1 || ! qconf -sh >/dev/null 2>&1; then
        log "sge_qmaster is not answering (run: bash ci/sge.sh up)"
        return 1
    fi
    qstat -f
}

case "${1:-up}" in
    up)
        start_ts=$(date +%s)
        STEP=ensure_hostname_resolves; ensure_hostname_resolves
        STEP=install_packages;         install_packages
        STEP=configure_files;          configure_files
        STEP=start_qmaster;            start_qmaster
        STEP=configure_cluster;        configure_cluster
        STEP=start_execd;              start_execd
        STEP=smoke_test;               smoke_test
        STEP=status;                   status
        log "ready in $(( $(date +%s) - start_ts ))s; for DRMAA: source ci/sge.env (SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL DRMAA_LIBRARY_PATH=/usr/lib/gridengine-drmaa/lib/libdrmaa.so.1.0 GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384)"
        ;;
    down) STEP=down; stop_daemons ;;
    status)
        # Tested in an `if` so that a down cluster exits 1 without the ERR trap's message.
        if status; then exit 0; else exit 1; fi ;;
    *) die "usage: $0 [up|down|status]" ;;
esac
