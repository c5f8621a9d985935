#!/usr/bin/env bash
# ci/pbs-wrappers.sh: Slurm's PBS-style wrappers (qsub, qstat, qdel, qhold,
# qrls, qalter, qrerun, pbsnodes, ... from Debian's slurm-wlm-torque) in a
# directory of their own, /opt/hpcqueue-ci/pbs/bin, WITHOUT installing the
# package, so that Grid Engine (ci/sge.sh, whose gridengine-client also ships
# /usr/bin/qsub, qstat, qdel and conflicts with slurm-wlm-torque) can be
# installed on the same machine and both be tested in one pytest run:
#
#   bash ci/slurm.sh up && bash ci/pbs-wrappers.sh && bash ci/sge.sh up
#   PATH=/opt/hpcqueue-ci/pbs/bin:$PATH qsub job.sh    # PBS over Slurm
#   /usr/bin/qsub job.sh                               # Grid Engine
#
# Target: Debian 12 (bookworm), run as root. Needs slurm-client (installed
# if missing) and, for the smoke test, the running cluster of ci/slurm.sh.
#
# What it does:
#   * removes the slurm-wlm-torque package if it is installed (an earlier
#     `SLURM_PBS_WRAPPERS=1 ci/slurm.sh up`), after marking its dependencies
#     manually installed so that a later `apt-get autoremove` keeps them;
#   * installs with apt only the package's dependencies: libslurm-perl,
#     libslurmdb-perl, libswitch-perl (and slurm-client, perl if missing);
#   * `apt-get download`s slurm-wlm-torque at the version of the installed
#     slurm-client (the .deb in /var/cache/apt/archives is used if there) and
#     unpacks it with `dpkg-deb -x` into /opt/hpcqueue-ci/pbs (usr/bin, man);
#   * links sbatch, salloc and srun next to the wrappers: qsub and
#     mpiexec.slurm run "${FindBin::Bin}/sbatch" (the directory they were
#     started from), not the one on PATH; without them qsub exits 127 with
#     "There was an error running the Slurm sbatch command. ... sh: 1:
#     /opt/hpcqueue-ci/pbs/usr/bin/sbatch: not found";
#   * makes /opt/hpcqueue-ci/pbs/bin a link to usr/bin, so either directory
#     can go on PATH. Nothing else is needed: the wrappers `use lib` the
#     system perl directory where libslurm-perl puts Slurm.pm;
#   * enables the spank_pbs plugin (shipped by slurm-wlm-basic-plugins, not
#     by slurm-wlm-torque) as `SLURM_PBS_WRAPPERS=1 ci/slurm.sh up` does, so
#     jobs get PBS_JOBID, PBS_JOBNAME, PBS_O_WORKDIR, ... New jobs see it
#     without restarting slurmd;
#   * smoke test, when Slurm answers: `qsub` a script with `#PBS -q debug
#     -l walltime=00:01:00` through the new directory, wait for it and check
#     its output and PBS_JOBID.
#
# Exit status 0 when the wrappers are in place (and the smoke job passed);
# otherwise an "ERROR:" line on stderr names the step. The last line printed
# is "PBS wrappers in /opt/hpcqueue-ci/pbs/bin".
#
# Safe to run again: it downloads and unpacks only when the wrappers are
# missing or their version differs from slurm-client's.
#
# Settings (environment variables, all optional):
#   PBS_WRAPPERS_PREFIX   where to unpack (default /opt/hpcqueue-ci/pbs)
#   PBS_SPANK             1 (default) enables spank_pbs; 0 leaves it alone
#   PBS_SMOKE_TEST        1 (default) runs the smoke job; 0 skips it
#
# Measured on the 2-core dev VM (Slurm up): first run replacing the installed
# package 5 s; fresh unpack with `apt-get download` 4 s; rerun 1-2.5 s (the
# smoke job is ~1 s of each).
#
# The wrappers behave exactly as the packaged ones (see ci/slurm.sh's header
# and docs/autoalloc.md): qsub prints the bare Slurm job id, errors go to
# stdout with exit 1; qstat of an unknown id prints nothing and exits 153.

set -Eeuo pipefail

log() { printf '[ci/pbs-wrappers.sh] %s\n' "$*"; }
die() { printf '[ci/pbs-wrappers.sh] ERROR: %s\n' "$*" >&2; exit 1; }
STEP=init
trap 'rc=$?; printf "[ci/pbs-wrappers.sh] ERROR: step \"%s\" failed (exit %s at line %s: %s)\n" "$STEP" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit $rc' ERR

[ "$(id -u)" -eq 0 ] || die "run as root"

PREFIX=${PBS_WRAPPERS_PREFIX:-/opt/hpcqueue-ci/pbs}
BIN=$PREFIX/bin
SPANK=${PBS_SPANK:-1}
SMOKE=${PBS_SMOKE_TEST:-1}
DEPS=(perl libswitch-perl slurm-client libslurm-perl libslurmdb-perl)
# Wait for another apt/dpkg (e.g. unattended-upgrades, a parallel setup
# step) instead of failing with "Could not get lock /var/lib/dpkg/lock-frontend".
APT_LOCK="-o DPkg::Lock::Timeout=300"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_deps() {
    local missing=()
    for p in "${DEPS[@]}"; do installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-cache show libslurm-perl >/dev/null 2>&1 || { log "apt-get update"; apt-get update -q $APT_LOCK; }
        apt-get install -y -q $APT_LOCK --no-install-recommends "${missing[@]}"
    else
        log "dependencies already installed: ${DEPS[*]}"
    fi
    # Installed as dependencies of slurm-wlm-torque they are marked "auto",
    # and `apt-get autoremove` would take them once the package is gone.
    apt-mark manual "${DEPS[@]}" >/dev/null
}

remove_package() {
    if installed slurm-wlm-torque; then
        log "slurm-wlm-torque is installed as a package; removing it (gridengine-client conflicts with it)"
        DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $APT_LOCK slurm-wlm-torque
    else
        log "slurm-wlm-torque package not installed (good: gridengine-client can be)"
    fi
}

unpack() {
    local ver have deb
    ver=$(dpkg-query -W -f='${Version}' slurm-client)
    have=$(cat "$PREFIX/.version" 2>/dev/null || true)
    if [ "$have" = "$ver" ] && [ -x "$PREFIX/usr/bin/qsub" ] && [ -x "$PREFIX/usr/bin/qstat" ] && [ -x "$PREFIX/usr/bin/qdel" ]; then
        log "wrappers $ver already unpacked in $PREFIX"
    else
        deb=$(ls /var/cache/apt/archives/slurm-wlm-torque_"${ver//:/%3a}"_all.deb 2>/dev/null || true)
        if [ -n "$deb" ]; then
            log "using cached $deb"
        else
            log "apt-get download slurm-wlm-torque=$ver"
            # _apt must be able to write there, or apt warns and downloads as root.
            chown _apt "$WORK" 2>/dev/null || true
            (cd "$WORK" && apt-get download -q "slurm-wlm-torque=$ver") \
                || { apt-get update -q $APT_LOCK && (cd "$WORK" && apt-get download -q "slurm-wlm-torque=$ver"); }
            deb=$(ls "$WORK"/slurm-wlm-torque_*.deb)
        fi
        rm -rf "$WORK/x"
        dpkg-deb -x "$deb" "$WORK/x"
        [ -x "$WORK/x/usr/bin/qsub" ] || die "$deb has no usr/bin/qsub"
        install -d "$PREFIX"
        rm -rf "${PREFIX:?}/usr"
        mv "$WORK/x/usr" "$PREFIX/usr"
        echo "$ver" >"$PREFIX/.version"
        log "unpacked slurm-wlm-torque $ver into $PREFIX"
    fi
    # qsub runs "${FindBin::Bin}/sbatch", mpiexec.slurm "${FindBin::Bin}/srun".
    for c in sbatch salloc srun; do ln -sfn "/usr/bin/$c" "$PREFIX/usr/bin/$c"; done
    if [ ! -L "$BIN" ]; then rm -rf "${BIN:?}"; fi
    ln -sfn usr/bin "$BIN"
}

enable_spank() {
    [ "$SPANK" = 1 ] || { log "PBS_SPANK=0: spank_pbs left alone"; return; }
    [ -f /usr/lib/x86_64-linux-gnu/slurm-wlm/spank_pbs.so ] || die "spank_pbs.so missing (package slurm-wlm-basic-plugins)"
    install -d /etc/slurm/plugstack.conf.d
    # Debian's plugstack.conf includes plugstack.conf.d/*.conf; keep it so.
    grep -qs '^include /etc/slurm/plugstack.conf.d/\*.conf' /etc/slurm/plugstack.conf \
        || echo 'include /etc/slurm/plugstack.conf.d/*.conf' >>/etc/slurm/plugstack.conf
    if [ "$(cat /etc/slurm/plugstack.conf.d/pbs.conf 2>/dev/null)" = "required spank_pbs.so" ]; then
        log "spank_pbs already enabled"
    else
        echo "required spank_pbs.so" >/etc/slurm/plugstack.conf.d/pbs.conf
        log "enabled spank_pbs (/etc/slurm/plugstack.conf.d/pbs.conf): jobs get PBS_JOBID, PBS_O_WORKDIR, ..."
    fi
}

smoke_test() {
    [ "$SMOKE" = 1 ] || return 0
    if ! scontrol ping >/dev/null 2>&1; then
        log "Slurm does not answer: smoke test skipped (run bash ci/slurm.sh up first)"
        return
    fi
    local jid state="" out
    cat >"$WORK/smoke.sh" <<'EOF'
#!/bin/bash
#PBS -N pbs-smoke
#PBS -q debug
#PBS -l walltime=00:01:00
echo "pbs-smoke-ok PBS_JOBID=${PBS_JOBID:-unset}"
EOF
    log "smoke test: $BIN/qsub a #PBS job to partition debug"
    out=$(cd "$WORK" && PATH="$BIN:$PATH" qsub -o "$WORK/out" -e "$WORK/err" smoke.sh 2>&1) \
        || die "qsub failed: $out"
    jid=$(tail -1 <<<"$out")
    [[ "$jid" =~ ^[0-9]+$ ]] || die "qsub printed '$out', not a job id"
    for _ in $(seq 300); do
        state=$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p') || true
        case "$state" in PENDING|CONFIGURING|RUNNING|COMPLETING|"") sleep 0.1 ;; *) break ;; esac
    done
    [ "$state" = COMPLETED ] || { scancel "$jid" 2>/dev/null || true; die "smoke job $jid ended as ${state:-unknown}: $(cat "$WORK/out" "$WORK/err" 2>/dev/null)"; }
    PATH="$BIN:$PATH" qstat -f "$jid" | grep -q "job_state = C" || die "qstat -f $jid does not show job_state = C"
    out=$(cat "$WORK/out")
    [[ "$out" == pbs-smoke-ok* ]] || die "smoke job $jid wrote: $out"
    if [ "$SPANK" = 1 ] && [[ "$out" != *"PBS_JOBID=$jid" ]]; then
        die "smoke job $jid has no PBS_JOBID (spank_pbs not loaded?): $out"
    fi
    log "smoke job $jid: $out"
}

start_ts=$(date +%s)
STEP=install_deps;   install_deps
STEP=remove_package; remove_package
STEP=unpack;         unpack
STEP=enable_spank;   enable_spank
STEP=smoke_test;     smoke_test
log "ready in $(( $(date +%s) - start_ts ))s"
echo "PBS wrappers in $BIN"
