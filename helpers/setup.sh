#!/bin/sh
# Install what pinhole needs on Debian/Ubuntu (apt) or Fedora (dnf), then make .venv with the
# distro's own python3 (so distro-only modules such as pyverbs stay importable) and install
# pinhole into it. Run as root from a pinhole checkout; safe to run again.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "helpers/setup.sh: needs root to install packages: sudo $0" >&2
    exit 2
fi

# The host suite; RDMA (the distro's pyverbs, rxe provider, iproute2's rdma); the kernel
# matrix (qemu, busybox and kmod for virtme-ng, the archive keyring for private apt); kernels
# built from source (debian-src:, validation/): the kernel's build tools.
DEBIAN="python3 python3-venv python3-pip e2fsprogs xfsprogs btrfs-progs util-linux kmod
        python3-pyverbs rdma-core ibverbs-providers iproute2
        qemu-system-x86 busybox-static debian-archive-keyring
        gcc make flex bison bc libelf-dev libssl-dev xz-utils chromium"
FEDORA="python3 python3-pip e2fsprogs xfsprogs btrfs-progs util-linux kmod
        python3-pyverbs rdma-core libibverbs iproute qemu-system-x86 busybox
        gcc make flex bison bc elfutils-libelf-devel openssl-devel xz glibc-static chromium"

if command -v apt-get >/dev/null; then
    missing=$(for p in $DEBIAN; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
elif command -v dnf >/dev/null; then
    # shellcheck disable=SC2086
    dnf install -y -q $FEDORA
else
    echo "helpers/setup.sh: no apt-get or dnf: install $FEDORA yourself" >&2
    exit 2
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,matrix,kernel-view]'
echo "pinhole is installed in .venv: .venv/bin/pinhole probe"
