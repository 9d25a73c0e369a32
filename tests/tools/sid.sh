# shellcheck shell=bash
# Sourced by tests/run.sh and examples/demo.sh: Python 3.14 and 3.15 (with CPython's test package) and
# Prometheus 3 for a Debian 12 host that has none of them, from Debian sid's binary packages in a debootstrap root.
#
#   tf_in_sid CMD ARGS...   run CMD inside the root, in the current directory: the root is made when absent (as
#                           root: debootstrap, about a minute) and mounted when not (/proc, /dev, /dev/shm, and
#                           this repository at the same absolute path, so a venv made inside works inside)
#   tf_sid_has 3.14         true when the root can provide that Python (we are root, and it is a version it has)
#   tf_sid_root             make the root if needed and print its path: "$(tf_sid_root)/usr/bin/promtool"
#   tf_sid_umount           unmount what this shell mounted (callers: trap tf_sid_umount EXIT)
#
# TF_SID_ROOT (default /var/cache/tracedfutures/sid) is where the root lives; it is built in "$TF_SID_ROOT.tmp"
# and renamed when complete, so a half-made root is never used, and re-used once there (what it lacks of
# TF_SID_PACKAGES, say after this list grew, is installed into it).
# Venvs made inside the root (tf_venv in tests/tools/venv.sh) run only through tf_in_sid (tf_py does that).

TF_SID_ROOT=${TF_SID_ROOT:-/var/cache/tracedfutures/sid}
TF_SID_MIRROR=${TF_SID_MIRROR:-http://deb.debian.org/debian}
TF_SID_PYTHONS="3.14 3.15"
TF_SID_PACKAGES=python3.14,python3.14-venv,libpython3.14-testsuite,python3.15,python3.15-venv
TF_SID_PACKAGES+=,libpython3.15-testsuite,prometheus,valgrind  # valgrind: the instruction gate on 3.14
TF_SID_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TF_SID_MOUNTED=$(mktemp -t tracedfutures-sid-mounts.XXXXXX)  # what this shell mounted, one target a line
TF_SID_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}     # the CA bundle pip uses here, copied in

tf_sid_has() {
    [ "$(id -u)" -eq 0 ] && [[ " $TF_SID_PYTHONS " == *" $1 "* ]]
}

tf_sid_root() {
    tf_sid_up && echo "$TF_SID_ROOT"
}

tf_in_sid() {
    tf_sid_up || return 1
    # The host's pip settings (find-links, a config with constraint files and file:// indexes) name paths that
    # are not in the root; the CA bundle is copied to the root's usual place.
    # shellcheck disable=SC2016  # expanded by the shell inside
    chroot "$TF_SID_ROOT" /usr/bin/env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/sh -c 'cd "$0" && exec "$@"' "$PWD" "$@"
}

tf_sid_up() {  # the root made and mounted; stages running side by side take turns
    if [ "$(id -u)" -ne 0 ]; then
        echo "Python ${TF_SID_PYTHONS// //} come from a Debian sid root made with debootstrap, which needs root;" \
             "or put them on PATH (3.14 and 3.15 with CPython's test package, Debian: libpython3.X-testsuite)" >&2
        return 1
    fi
    mkdir -p "$(dirname "$TF_SID_ROOT")"
    ( flock 9 && tf_sid_make && tf_sid_mount && tf_sid_complete ) 9>"$TF_SID_ROOT.lock"
}

tf_sid_make() {
    local new="$TF_SID_ROOT.tmp"
    [ -d "$TF_SID_ROOT" ] && return 0
    command -v debootstrap >/dev/null || tf_apt_install debootstrap || return 1
    tf_sid_umount_under "$new" || return 1  # what a killed debootstrap may have left mounted
    rm -rf "$new"
    echo "making a Debian sid root at $TF_SID_ROOT (debootstrap, about a minute)" >&2
    if ! debootstrap --variant=minbase --include="$TF_SID_PACKAGES" sid "$new" "$TF_SID_MIRROR" >"$new.log" 2>&1; then
        tail -n 30 "$new.log" >&2
        echo "debootstrap failed (whole log: $new.log)" >&2
        return 1
    fi
    rm -f "$new.log"
    mv -T "$new" "$TF_SID_ROOT"
}

tf_sid_mount() {
    local root=$TF_SID_ROOT
    tf_sid_mount_at "$root/proc" -t proc proc &&
        tf_sid_mount_at "$root/dev" --bind /dev &&
        tf_sid_mount_at "$root/dev/shm" -t tmpfs tmpfs &&  # not the host's: only /dev itself is bound
        mkdir -p "$root$TF_SID_REPO" &&
        tf_sid_mount_at "$root$TF_SID_REPO" --bind "$TF_SID_REPO" || return 1
    # Name resolution and the CA bundle for pip (--remove-destination: never write through a link in the root).
    cmp -s /etc/resolv.conf "$root/etc/resolv.conf" || cp --remove-destination /etc/resolv.conf "$root/etc/resolv.conf"
    if [ -f "$TF_SID_CA" ] && ! cmp -s "$TF_SID_CA" "$root/etc/ssl/certs/ca-certificates.crt"; then
        mkdir -p "$root/etc/ssl/certs"
        cp --remove-destination "$TF_SID_CA" "$root/etc/ssl/certs/ca-certificates.crt"
    fi
}

tf_sid_complete() {  # install what the root lacks of TF_SID_PACKAGES (from the package lists it has, else new ones)
    local package missing=() log
    for package in ${TF_SID_PACKAGES//,/ }; do
        dpkg-query --admindir="$TF_SID_ROOT/var/lib/dpkg" -W -f '${db:Status-Status}' "$package" 2>/dev/null |
            grep -qx installed || missing+=("$package")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "installing ${missing[*]} into $TF_SID_ROOT" >&2
    log=$(mktemp)
    # shellcheck disable=SC2016  # expanded by the shell inside
    if ! chroot "$TF_SID_ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive /bin/sh -c '
            install() { apt-get install -y -qq --no-install-recommends "$@"; }
            install "$@" || { apt-get update -qq && install "$@"; }' sh "${missing[@]}" >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
}

tf_sid_mount_at() {  # tf_sid_mount_at TARGET MOUNT-ARGS...: mount unless something is mounted there already
    # ...but not a bind mount that a killed run left of a directory since deleted (a clone removed and made again
    # at the same path): processes would start in a directory that no longer exists ("[Errno 2]" from getcwd).
    if mountpoint -q "$1" && [[ $(findmnt -n -o FSROOT --mountpoint "$1" | tail -n 1) == *//deleted ]]; then
        umount --lazy "$1"
    fi
    mountpoint -q "$1" && return 0
    mount "${@:2}" "$1" && echo "$1" >>"$TF_SID_MOUNTED"
}

tf_sid_umount() {
    local target
    if [ -f "$TF_SID_MOUNTED" ]; then
        tac "$TF_SID_MOUNTED" | while read -r target; do
            umount "$target" 2>/dev/null || umount --lazy "$target"  # lazy: a process left inside holds it
        done
    fi
    rm -f "$TF_SID_MOUNTED"
}

tf_sid_umount_under() {  # tf_sid_umount_under DIR: unmount everything below DIR, deepest first
    local target
    findmnt -rn -o TARGET | grep -F "$1/" | sort -r | while read -r target; do
        [[ $target == "$1"/* ]] && umount --lazy "$target"
    done
    ! findmnt -rn -o TARGET | grep -qF "$1/"
}
