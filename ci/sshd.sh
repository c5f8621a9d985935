#!/usr/bin/env bash
# ci/sshd.sh: a dedicated sshd on 127.0.0.1:2222 so hpcqueue's SSH code paths
# (remote login node: sbatch/squeue over SSH, fabric/paramiko) can be tested
# against localhost, next to the single-node Slurm of ci/slurm.sh.
#
# Target: Debian 12 (bookworm), run as root, no systemd required (sshd is
# started by hand, so it also works in containers/micro-VMs without init).
#
# Usage:
#   bash ci/sshd.sh [up]    install if needed, configure, start, verify
#   bash ci/sshd.sh down    stop this sshd only (other sshds are left alone)
#   bash ci/sshd.sh status  pid, listening socket, `ssh hpcq-login true`;
#                           exits 1 if it is not running or does not answer
#
# Exit status: 0 when `ssh -o BatchMode=yes hpcq-login true` and
# `... squeue -h` work; non-zero otherwise, with an "ERROR:" line on stderr.
#
# Safe to run again: installs only what is missing, generates host and client
# keys once, rewrites the sshd config / ~/.ssh/config block / known_hosts
# entries only when their content changes, restarts sshd only when needed.
#
# What it sets up:
#   server  config /etc/hpcqueue-ci/sshd_config, host key
#           /etc/hpcqueue-ci/ssh_host_ed25519_key, pid file
#           /run/hpcqueue-ci-sshd.pid, log /var/log/hpcqueue-ci-sshd.log;
#           listens on 127.0.0.1:2222 only; keys only (PasswordAuthentication
#           no, PermitRootLogin prohibit-password); SFTP enabled (fabric's
#           Connection.put needs it); UsePAM no.
#   client  key /root/.ssh/hpcqueue_ci_ed25519 (authorized once in
#           /root/.ssh/authorized_keys), host alias `hpcq-login` in a marked
#           block at the top of /root/.ssh/config, host key pinned in
#           /root/.ssh/known_hosts for [127.0.0.1]:2222 and hpcq-login, so
#           StrictHostKeyChecking=yes and BatchMode=yes work without prompts.
#   Python (fabric/paramiko): Connection("hpcq-login") reads ~/.ssh/config by
#           default but never ~/.ssh/known_hosts (it accepts any host key);
#           hpcqueue loads known_hosts itself and refuses unknown keys.
#
# Remote PATH: a non-interactive `ssh hpcq-login CMD` runs `bash -c CMD`; sshd
# gives it PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# and Debian's bash (built with SSH_SOURCE_BASHRC) then sources ~/.bashrc,
# which here prepends pyenv's shims. The script checks that the remote PATH
# finds squeue and /root/.pyenv/shims/python3 and prints a WARNING (it does
# not fail, nor edit ~/.bashrc) when pyenv is missing; set
# SSHD_SETENV_PATH=1 to have sshd itself put pyenv's shims on PATH (SetEnv).
#
# Settings (environment variables, all optional):
#   SSHD_SETENV_PATH   1 adds "SetEnv PATH=/root/.pyenv/shims:..." to the
#                      sshd config (default 0: not needed on Debian).

set -Eeuo pipefail

log()  { printf '[ci/sshd.sh] %s\n' "$*"; }
warn() { printf '[ci/sshd.sh] WARNING: %s\n' "$*" >&2; }
die()  { printf '[ci/sshd.sh] ERROR: %s\n' "$*" >&2; exit 1; }
STEP=init
trap 'rc=$?; printf "[ci/sshd.sh] ERROR: step \"%s\" failed (exit %s at line %s: %s)\n" "$STEP" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit $rc' ERR

[ "$(id -u)" -eq 0 ] || die "run as root"

ADDR=127.0.0.1
PORT=2222
ALIAS=hpcq-login
ETC=/etc/hpcqueue-ci
CONF=$ETC/sshd_config
HOSTKEY=$ETC/ssh_host_ed25519_key
PIDFILE=/run/hpcqueue-ci-sshd.pid
LOGFILE=/var/log/hpcqueue-ci-sshd.log
SSHD=/usr/sbin/sshd       # absolute path: sshd re-executes itself
SSH_DIR=/root/.ssh
CLIENT_KEY=$SSH_DIR/hpcqueue_ci_ed25519
SSH_CONFIG=$SSH_DIR/config
KNOWN_HOSTS=$SSH_DIR/known_hosts
AUTH_KEYS=$SSH_DIR/authorized_keys
BEGIN_MARK="# BEGIN hpcqueue-ci (managed by ci/sshd.sh; edits here are overwritten)"
END_MARK="# END hpcqueue-ci"
SETENV_PATH=${SSHD_SETENV_PATH:-0}

alive() {
    local pid=$1
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
pid_of() { [ -r "$1" ] && cat "$1" 2>/dev/null || true; }
# Our sshd: the pid in our pid file, alive, and started with our config file.
our_pid() {
    local pid
    pid=$(pid_of "$PIDFILE")
    alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-f $CONF" && echo "$pid" || true
}
listening() { ss -Hltn "sport = :$PORT" 2>/dev/null | grep -qF "$ADDR:$PORT"; }

install_packages() {
    local missing=() p
    for p in openssh-server openssh-client; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed: openssh-server openssh-client"
        return
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-cache show openssh-server >/dev/null 2>&1 || { log "apt-get update"; apt-get update -q; }
    # Without systemd the package's postinst would start the system sshd
    # (port 22, all addresses) through /etc/init.d; a policy-rc.d that
    # exits 101 forbids that. Add one only for the install if there is none.
    local tmp_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        tmp_policy=1
    fi
    local rc=0
    apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    [ "$tmp_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

server_keys_and_config() {
    install -d -m 0755 "$ETC"
    if [ ! -s "$HOSTKEY" ]; then
        log "generating host key $HOSTKEY"
        rm -f "$HOSTKEY" "$HOSTKEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hpcqueue-ci-sshd" -f "$HOSTKEY"
    else
        log "host key exists: $HOSTKEY ($(ssh-keygen -l -f "$HOSTKEY.pub" | awk '{print $2}'))"
    fi
    chmod 0600 "$HOSTKEY"; chmod 0644 "$HOSTKEY.pub"

    local tmp setenv=""
    [ "$SETENV_PATH" = 1 ] && setenv="SetEnv PATH=/root/.pyenv/shims:/root/.pyenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Generated by hpcqueue ci/sshd.sh: test sshd for the hpcq-login alias.
# Independent of /etc/ssh/sshd_config (started with -f, own keys and pid file).
Port $PORT
ListenAddress $ADDR
AddressFamily inet
HostKey $HOSTKEY
PidFile $PIDFILE
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
# No PAM: nothing to gain here and pam_loginuid fails in containers.
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
# fabric/paramiko Connection.put uses SFTP.
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 50:30:100
MaxSessions 50
LogLevel INFO
$setenv
EOF
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        log "$CONF unchanged"
        CONFIG_CHANGED=0
    else
        # systemd would create the privilege separation directory
        # (RuntimeDirectory=); sshd, even `sshd -t`, refuses to run without it.
        install -d -m 0755 /run/sshd
        "$SSHD" -t -f "$tmp" || { rm -f "$tmp"; die "generated sshd config is invalid (sshd -t)"; }
        mv "$tmp" "$CONF"; chmod 0644 "$CONF"
        log "wrote $CONF ($ADDR:$PORT, keys only)"
        CONFIG_CHANGED=1
    fi
}

stop_sshd() {
    local pid
    pid=$(our_pid)
    if [ -z "$pid" ]; then
        log "hpcqueue-ci sshd not running"
        rm -f "$PIDFILE"
        return
    fi
    log "stopping hpcqueue-ci sshd (pid $pid); open sessions and other sshds are left alone"
    kill "$pid"
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "pid $pid still alive, sending SIGKILL"; kill -9 "$pid" || true; fi
    rm -f "$PIDFILE"
    log "stopped"
}

start_sshd() {
    local pid
    pid=$(our_pid)
    if [ -n "$pid" ] && [ "${CONFIG_CHANGED:-0}" = 0 ] && listening; then
        log "sshd already running (pid $pid) on $ADDR:$PORT with this config"
        return
    fi
    [ -n "$pid" ] && { log "restarting sshd (config changed or not listening)"; stop_sshd; }
    if listening; then
        die "$ADDR:$PORT is already in use by another process: $(ss -Hltnp "sport = :$PORT" | tr -s ' ')"
    fi
    install -d -m 0755 /run/sshd
    log "starting $SSHD -f $CONF (log: $LOGFILE)"
    "$SSHD" -f "$CONF" -E "$LOGFILE"
    for _ in $(seq 50); do
        [ -n "$(our_pid)" ] && listening && break
        sleep 0.1
    done
    [ -n "$(our_pid)" ] && listening || die "sshd did not come up on $ADDR:$PORT; see $LOGFILE"
    log "sshd running (pid $(our_pid)) on $ADDR:$PORT"
}

client_setup() {
    install -d -m 0700 "$SSH_DIR"
    if [ ! -s "$CLIENT_KEY" ]; then
        log "generating client key $CLIENT_KEY"
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hpcqueue-ci@$(hostname)" -f "$CLIENT_KEY"
    else
        log "client key exists: $CLIENT_KEY"
    fi
    [ -s "$CLIENT_KEY.pub" ] || ssh-keygen -y -f "$CLIENT_KEY" >"$CLIENT_KEY.pub"
    chmod 0600 "$CLIENT_KEY"; chmod 0644 "$CLIENT_KEY.pub"

    # authorized_keys: match on the key blob (field 2), ignore the comment.
    local blob
    blob=$(awk '{print $2}' "$CLIENT_KEY.pub")
    touch "$AUTH_KEYS"; chmod 0600 "$AUTH_KEYS"
    if grep -qF -- "$blob" "$AUTH_KEYS"; then
        log "client key already in $AUTH_KEYS"
    else
        # Keep a missing final newline from gluing two keys together.
        [ -s "$AUTH_KEYS" ] && [ -n "$(tail -c1 "$AUTH_KEYS")" ] && echo >>"$AUTH_KEYS"
        cat "$CLIENT_KEY.pub" >>"$AUTH_KEYS"
        log "authorized client key in $AUTH_KEYS"
    fi

    # ~/.ssh/config: one marked block, placed first (first match wins in
    # ssh_config, so a later "Host *" cannot override these options).
    local tmp block
    block=$(cat <<EOF
$BEGIN_MARK
Host $ALIAS
    HostName $ADDR
    Port $PORT
    User root
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    UserKnownHostsFile $KNOWN_HOSTS
$END_MARK
EOF
)
    touch "$SSH_CONFIG"
    tmp=$(mktemp)
    { printf '%s\n' "$block"
      awk -v b="$BEGIN_MARK" -v e="$END_MARK" '$0==b{skip=1;next} $0==e{skip=0;next} !skip' "$SSH_CONFIG"
    } >"$tmp"
    if cmp -s "$tmp" "$SSH_CONFIG"; then
        rm -f "$tmp"; log "$SSH_CONFIG: host $ALIAS block unchanged"
    else
        cat "$tmp" >"$SSH_CONFIG"; rm -f "$tmp"; log "$SSH_CONFIG: wrote host $ALIAS block ($ADDR:$PORT, User root, $CLIENT_KEY)"
    fi
    chmod 0600 "$SSH_CONFIG"

    # known_hosts: pin our host key (read from the key file, no keyscan) for
    # the names ssh and paramiko look up: [127.0.0.1]:2222 (alias resolved)
    # plus the alias itself. Replace a stale entry, never duplicate one.
    local key name want
    key=$(awk '{print $1" "$2}' "$HOSTKEY.pub")
    touch "$KNOWN_HOSTS"; chmod 0644 "$KNOWN_HOSTS"
    for name in "[$ADDR]:$PORT" "$ALIAS" "[$ALIAS]:$PORT"; do
        want="$name $key"
        if [ "$(ssh-keygen -F "$name" -f "$KNOWN_HOSTS" 2>/dev/null | grep -v '^#' | awk '{print $2" "$3}' | sort -u)" = "$key" ]; then
            log "known_hosts: $name already pinned"
            continue
        fi
        if ssh-keygen -F "$name" -f "$KNOWN_HOSTS" >/dev/null 2>&1; then
            log "known_hosts: replacing stale entry for $name"
            ssh-keygen -q -R "$name" -f "$KNOWN_HOSTS" >/dev/null 2>&1
            rm -f "$KNOWN_HOSTS.old"
        fi
        [ -s "$KNOWN_HOSTS" ] && [ -n "$(tail -c1 "$KNOWN_HOSTS")" ] && echo >>"$KNOWN_HOSTS"
        echo "$want" >>"$KNOWN_HOSTS"
        log "known_hosts: pinned $name"
    done
}

SSH_OPTS=(-o BatchMode=yes -o ConnectTimeout=5)

verify() {
    local out err
    err=$(mktemp)
    if ! out=$(ssh "${SSH_OPTS[@]}" "$ALIAS" true 2>"$err"); then
        die "ssh -o BatchMode=yes $ALIAS true failed: $(cat "$err"); see $LOGFILE"
    fi
    [ -z "$out" ] || warn "remote 'true' printed to stdout (breaks output parsing): $out"
    log "ok: ssh -o BatchMode=yes $ALIAS true"
    if ! out=$(ssh "${SSH_OPTS[@]}" "$ALIAS" squeue -h 2>"$err"); then
        die "ssh $ALIAS squeue -h failed: $(cat "$err") (is Slurm up? bash ci/slurm.sh up)"
    fi
    log "ok: ssh -o BatchMode=yes $ALIAS squeue -h ($(printf '%s' "$out" | grep -c . || true) job(s) listed)"
    rm -f "$err"

    # What a non-interactive remote command sees (what fabric's run() gets).
    local probe squeue_at py_at rpath
    probe=$(ssh "${SSH_OPTS[@]}" "$ALIAS" 'echo "PATH=$PATH"; echo "squeue=$(command -v squeue)"; echo "python3=$(command -v python3)"')
    rpath=$(sed -n 's/^PATH=//p' <<<"$probe")
    squeue_at=$(sed -n 's/^squeue=//p' <<<"$probe")
    py_at=$(sed -n 's/^python3=//p' <<<"$probe")
    log "remote PATH=$rpath"
    [ -n "$squeue_at" ] || die "remote non-interactive PATH does not find squeue"
    log "remote squeue: $squeue_at"
    if [ "$py_at" = /root/.pyenv/shims/python3 ]; then
        log "remote python3: $py_at (pyenv shims on the remote PATH)"
    else
        warn "remote non-interactive PATH lacks /root/.pyenv/shims (python3 is '${py_at:-not found}'); rerun with SSHD_SETENV_PATH=1"
    fi
}

status() {
    local pid
    pid=$(our_pid)
    if [ -z "$pid" ]; then
        log "hpcqueue-ci sshd is not running (run: bash ci/sshd.sh up)"
        return 1
    fi
    log "hpcqueue-ci sshd pid $pid, config $CONF, log $LOGFILE"
    ss -Hltnp "sport = :$PORT" | tr -s ' ' | sed 's/^/[ci\/sshd.sh]   /'
    if ssh "${SSH_OPTS[@]}" "$ALIAS" true; then
        log "ssh $ALIAS: ok"
    else
        log "ssh $ALIAS: FAILED"
        return 1
    fi
}

case "${1:-up}" in
    up)
        start_ts=$(date +%s.%N)
        STEP=install_packages;       install_packages
        STEP=server_keys_and_config; server_keys_and_config
        STEP=start_sshd;             start_sshd
        STEP=client_setup;           client_setup
        STEP=verify;                 verify
        log "ready in $(awk -v s="$start_ts" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')s: ssh $ALIAS (root@$ADDR:$PORT)"
        ;;
    down) STEP=down; stop_sshd ;;
    status)
        if status; then exit 0; else exit 1; fi ;;
    *) die "usage: $0 [up|down|status]" ;;
esac
