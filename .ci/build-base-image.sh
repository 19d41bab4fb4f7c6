#!/usr/bin/env bash
# Build (once) a Debian root filesystem for the tests, packed as a tarball. Two flavours:
#
#   python        (default) the local Python base image of the Docker tests. Nothing can be
#                 pulled from a container hub here, so it is a minimal Debian bookworm made by
#                 debootstrap (from Debian's package archive) with python3, venv and pip, that
#                 `docker import` turns into an image.
#   python-trixie the same on Debian trixie (python3.13): an image whose Python differs from
#                 this machine's 3.11, where the docker context's wheels must still import.
#   systemd-host  the same plus systemd and openssh-server: the root of the `systemd_host`
#                 test fixture, a machine booted by systemd-nspawn whose systemd runs the
#                 ssh provider's releases as transient units.
#
# debootstrap takes about a minute, so the tarball is cached at a fixed path keyed by everything
# that changes its content (suite, variant, package list, this recipe's version). A cached
# tarball is reused as is; only a missing one is rebuilt. Concurrent callers share one build
# through a lock. Prints the tarball's path on stdout (progress goes to stderr).
#
# Usage: .ci/build-base-image.sh [--flavour python|python-trixie|systemd-host] [--key]
#        (--key: print the cache key and exit)
# Env:   MLSERVE_TEST_CACHE  cache dir (default /var/cache/mlserve-tests)
#        MLSERVE_DEBIAN_MIRROR  (default http://deb.debian.org/debian)
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
FLAVOUR=python
PRINT_KEY=
while [[ $# -gt 0 ]]; do
    case $1 in
    --flavour) FLAVOUR=$2 && shift 2 ;;
    --key) PRINT_KEY=1 && shift ;;
    *) echo "usage: $0 [--flavour python|python-trixie|systemd-host] [--key]" >&2 && exit 2 ;;
    esac
done
case $FLAVOUR in
python) PACKAGES=python3,python3-venv,python3-pip,ca-certificates ;;
python-trixie) PACKAGES=python3,python3-venv,python3-pip,ca-certificates && SUITE=trixie ;;
systemd-host) PACKAGES=python3,python3-venv,ca-certificates,systemd,systemd-sysv,openssh-server,dbus,libpam-systemd,dbus-user-session ;;
*) echo "unknown flavour $FLAVOUR (python, python-trixie, systemd-host)" >&2 && exit 2 ;;
esac
RECIPE=2 # bump when the steps below change the result
CACHE_DIR=${MLSERVE_TEST_CACHE:-/var/cache/mlserve-tests}
MIRROR=${MLSERVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}

KEY=$(printf '%s|%s|%s|%s' "$SUITE" "$VARIANT" "$PACKAGES" "$RECIPE" | sha256sum | cut -c1-12)
TARBALL="$CACHE_DIR/$SUITE-$FLAVOUR-$KEY.tar"

if [[ -n $PRINT_KEY ]]; then
    echo "$KEY"
    exit 0
fi

log() { echo "build-base-image: $*" >&2; }

if [[ -s $TARBALL ]]; then
    echo "$TARBALL"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    log "debootstrap needs root; run as root or provide $TARBALL"
    exit 2
fi
command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install -y debootstrap"; exit 2; }

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.build.lock"
flock 9
if [[ -s $TARBALL ]]; then # another caller built it while we waited
    echo "$TARBALL"
    exit 0
fi

WORK=$(mktemp -d "$CACHE_DIR/.build.XXXXXX")
cleanup() {
    # debootstrap may leave proc/sys mounted in the target after a failure
    for m in proc sys dev/pts dev; do
        mountpoint -q "$WORK/rootfs/$m" 2>/dev/null && umount -l "$WORK/rootfs/$m"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap $SUITE $FLAVOUR ($VARIANT, $PACKAGES) into $WORK/rootfs; takes about a minute"
debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$WORK/rootfs" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    log "debootstrap failed (full log above was $WORK/debootstrap.log)"
    exit 1
}
# Slim it (175 MB -> ~140 MB, a faster `docker import` or unpacking): package caches, lists,
# docs and translations are not needed to run python in a container (apt-get update restores
# lists). The systemd-host flavour's ssh host keys are made by the fixture on every boot.
chroot "$WORK/rootfs" apt-get clean
rm -rf "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/var/cache/apt/*.bin \
    "$WORK/rootfs"/usr/share/doc/* "$WORK/rootfs"/usr/share/man/* \
    "$WORK/rootfs"/usr/share/info/* "$WORK/rootfs"/usr/share/locale/*
chroot "$WORK/rootfs" python3 -c 'import venv, ensurepip, ssl' # prove the image will work
rm -f "$WORK/rootfs"/etc/ssh/ssh_host_*

tar --numeric-owner -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
mv "$WORK/rootfs.tar" "$TARBALL"
for old in "$CACHE_DIR/$SUITE-$FLAVOUR"-*.tar; do # tarballs of older recipes
    [[ $old == "$TARBALL" ]] || rm -f "$old"
done
log "built $TARBALL ($(du -h "$TARBALL" | cut -f1)) in $(($(date +%s) - start)) s"
echo "$TARBALL"
