#!/usr/bin/env bash
# Builds a tiny Linux guest (Debian kernel + busybox) whose init writes/reads its virtio disk and
# prints GUEST-RESULT. Output: $OUT/vmlinuz and $OUT/initrd.gz. Needs: apt (qemu-system-x86,
# busybox-static, cpio). A real, independent vhost-user frontend: QEMU + Linux virtio_blk/virtio_scsi.
set -euo pipefail
OUT=${OUT:-${TMPDIR:-/tmp}/vhost-user-guest}; here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT" && cd "$OUT"
apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt-get update >/dev/null
command -v qemu-system-x86_64 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-x86 >/dev/null
dpkg -s busybox-static >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >/dev/null
command -v cpio >/dev/null || apt-get install -y cpio >/dev/null
ver=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -f kpkg/boot/vmlinuz-* ] || { apt-get download "$ver" >/dev/null; dpkg-deb -x ${ver}_*.deb kpkg; }
K=$(ls -d kpkg/lib/modules/*/kernel)
rm -rf initramfs && mkdir -p initramfs/{bin,dev,proc,sys,mods,tmp}
cp /bin/busybox initramfs/bin/; cp "$here/init" initramfs/init; chmod +x initramfs/init
for m in drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko drivers/virtio/virtio_pci_legacy_dev.ko \
  drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci.ko drivers/block/virtio_blk.ko \
  drivers/scsi/scsi_common.ko drivers/scsi/scsi_mod.ko drivers/scsi/sd_mod.ko drivers/scsi/virtio_scsi.ko \
  lib/crc-t10dif.ko crypto/crct10dif_common.ko block/t10-pi.ko lib/crc64.ko lib/crc64-rocksoft.ko; do
  cp "$K/$m" initramfs/mods/
done
(cd initramfs && find . | cpio -o -H newc 2>/dev/null | gzip > ../initrd.gz)
cp kpkg/boot/vmlinuz-* vmlinuz
echo "$OUT/vmlinuz $OUT/initrd.gz"
