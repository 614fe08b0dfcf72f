#!/usr/bin/env bash
# Installs the Debian packages obd's build, tests, fuzzers and benchmarks need.
# Idempotent: packages already present are not touched, and apt-get update runs only
# when something is missing.
set -euo pipefail

PACKAGES=(
  pkg-config      # locates the C libraries for the system-library targets
  liblz4-dev      # ZFile LZ4 blocks
  libzstd-dev     # ZFile zstd blocks
  libisal-dev     # hardware CRC32C (crc32_iscsi) for ZFile checksums
  lz4 zstd        # peers measured by the compression benchmarks
  e2fsprogs       # debugfs/e2fsck to look inside demo images
  coreutils       # sha256sum, cmp, du used by tests and scripts
  qemu-utils      # qemu-img/qemu-io/qemu-nbd: NBD client checks and the NBD benchmark peer
  qemu-system-x86 # the VM integration tests' guest (TCG)
  linux-image-amd64 busybox-static cpio kmod  # the guest's kernel, init and module loading
  nbd-client      # the kernel NBD client, used inside the guest
  util-linux      # blkdiscard inside the guest
  fio             # NBD benchmark client (its nbd engine)
  libcurl4-openssl-dev  # the registry client (HTTP range reads, auth, TLS)
  docker-registry skopeo apache2-utils openssl  # registry integration tests: a real registry, pushes, htpasswd, a throwaway CA
  libnl-3-dev libnl-genl-3-dev  # TCMU generic netlink (obd-tcmu)
  libaio-dev      # ioEngine 1: native AIO with O_DIRECT for local layers
  libext2fs-dev   # obd convert/apply/mkfs: ext4 written in userspace through libext2fs
  libarchive-dev  # obd convert/apply: tar, tar.gz, tar.zst layer streams
  zlib1g-dev      # Gzip module: inflate from access points and the ddgzidx index (TurboOCI)
  pigz            # gzip tests: multi-block pigz streams as one of the index inputs
  umoci debootstrap  # convert tests: reference trees (umoci unpack) and a Debian minbase image
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

if ! command -v swift >/dev/null; then
  echo "install-deps: swift is not on PATH (obd needs Swift 6.1 or newer)" >&2
  exit 1
fi
