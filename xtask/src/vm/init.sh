#!/bin/busybox sh
# /init of the kernel matrix's initramfs: mounts what the recorder needs, loads the virtio
# modules, mounts the virtio disk where the tests keep their scratch files, runs the checks and
# prints `VM-VERDICT <kernel> PASS|FAIL <details>` on the console, then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp and /run stay on the initramfs, which is in memory and writable already: a tmpfs
# mounted over them would hide the workload, installed at the path its tests have compiled in
# (under /tmp when the checkout is there).
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
hostname flightrec-vm

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^flightrec\.$1=//p"; }
kernel=$(arg kernel)
verdict() {
    echo "VM-VERDICT $kernel $*"
    sync
    poweroff -f
}

. /etc/vm.env
while read -r m; do
    insmod "/modules/$m" || verdict "FAIL insmod $m failed"
done </modules/order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -b /dev/vda ] || verdict "FAIL no virtio disk /dev/vda"
mkdir -p "$DISK_MOUNT"
mount -t ext4 /dev/vda "$DISK_MOUNT" || verdict "FAIL mounting the virtio disk"

echo "vm-test: kernel $(uname -r), checks start"
EXPECT=$(arg expect) WORK="$DISK_MOUNT/vm-check" sh /checks.sh 2>&1 | tee /tmp/checks.log
result=$(tail -n 1 /tmp/checks.log)
case "$result" in
PASS* | FAIL*) verdict "$result" ;;
*) verdict "FAIL the checks stopped early: $result" ;;
esac
