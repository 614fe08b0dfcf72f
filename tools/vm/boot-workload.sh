# Runs chrooted into the guest's root file system (Debian minbase served by obd), from
# tools/vm/boot-init.sh:  boot-workload.sh [WRITE-TOKEN] [EXPECT-TOKEN]
# A small start-up workload: list /usr, dpkg, apt, perl, read some binaries; with a
# token, write it to /root/obd-boot-stamp (writable root) or check that it is there.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
up() { cut -d' ' -f1 /proc/uptime; }
echo "BOOT-WL-START $(up)"
. /etc/os-release
echo "BOOT-OS $PRETTY_NAME codename=$VERSION_CODENAME"
echo "BOOT-USR-ENTRIES $(ls -R /usr | wc -l)"
echo "BOOT-DPKG $(dpkg -l | grep -c '^ii')"
echo "BOOT-APT $(apt-get --version | head -1)"
echo "BOOT-PERL $(perl -e 'print 6 * 7')"
echo "BOOT-DOC $(ls /usr/share/doc | wc -l)"
echo "BOOT-BIN $(cat /usr/bin/bash /usr/bin/apt-get /usr/lib/x86_64-linux-gnu/libapt-pkg.so.* /usr/lib/x86_64-linux-gnu/libc.so.6 /usr/bin/perl | sha256sum | cut -c1-16)"
if [ -n "${1:-}" ]; then
  echo "$1" > /root/obd-boot-stamp && sync && echo "BOOT-STAMP-WRITTEN $1"
fi
if [ -n "${2:-}" ]; then
  echo "BOOT-STAMP-READ $(cat /root/obd-boot-stamp 2>/dev/null || echo none)"
fi
echo "BOOT-WL-END $(up)"
