#!/bin/sh
# kubezero installer: runs once in the Alpine live system booted from the official ISO with the
# kubezero apkovl (see provider/src/metal/installer/mod.rs for the whole design).
#
#   install mode: report `started`, pick the root disk, stream the image to it while hashing the
#                 streamed bytes, report `written`, compare the checksum, report `verified` and
#                 reboot (or report `failed` with a reason and power off);
#   wipe mode:    report `started`, clear the signatures of every disk (wipefs when installed,
#                 discard where supported, zero the first and last MiB of each partition and of
#                 the disk), report `wiped` (or `failed`) and power off.
#
# A report is `POST <KZ_REPORT_URL>/<phase>` whose body is the reason of `failed` (empty otherwise);
# any 2xx answer acknowledges it. The host reboots only after `verified` was acknowledged.
#
# Configuration comes from KZ_CONFIG (written by the provider). Every path and command used below
# can be overridden from the environment, so the tests run this script against regular files.
set -u

KZ_CONFIG=${KZ_CONFIG:-/etc/kubezero/installer.env}
# shellcheck source=/dev/null
. "$KZ_CONFIG" || exit 1

: "${KZ_MODE:=}" "${KZ_REPORT_URL:=}" "${KZ_HTTP_TIMEOUT:=60}" "${KZ_REPORT_ATTEMPTS:=30}"
: "${KZ_IMAGE_URL:=}" "${KZ_IMAGE_FORMAT:=raw}" "${KZ_CHECKSUM_ALGO:=sha256}" "${KZ_CHECKSUM:=}"
: "${KZ_ROOT_DEVICE:=}"

# Environment of the live system; the tests point these at a temporary directory.
: "${KZ_SYS_BLOCK:=/sys/block}" "${KZ_SYS_NET:=/sys/class/net}" "${KZ_DEV_DIR:=/dev}"
: "${KZ_PROC_MOUNTS:=/proc/mounts}" "${KZ_WORK_DIR:=/tmp/kubezero}"
: "${KZ_WGET:=wget}" "${KZ_DHCP:=kz_dhcp}" "${KZ_BLKID:=blkid}" "${KZ_WIPEFS:=wipefs}"
: "${KZ_BLKDISCARD:=blkdiscard}" "${KZ_QEMU_IMG:=qemu-img}"
: "${KZ_REBOOT:=reboot}" "${KZ_POWEROFF:=poweroff}"
: "${KZ_RETRY_SLEEP:=5}" "${KZ_REASON_MAX:=512}"
# yes: regular files count as disks (tests only; a live system has block devices).
: "${KZ_FILE_DISKS:=no}"

log() {
	printf 'kubezero-installer: %s\n' "$*" >&2
}

# wget with the options busybox wget and GNU wget share. `-T` (stall timeout) only where it exists:
# busybox built without FEATURE_WGET_TIMEOUT crashes on it (Debian's busybox before 1.36.1-5).
kz_wget() {
	if [ "$WGET_TIMEOUT" = yes ]; then
		"$KZ_WGET" -q -t 1 -T "$KZ_HTTP_TIMEOUT" "$@"
	else
		"$KZ_WGET" -q -t 1 "$@"
	fi
}

# POST URL BODY; true on a 2xx answer.
http_post() {
	kz_wget -O /dev/null --post-data="$2" "$1"
}

# report PHASE [REASON]: retried KZ_REPORT_ATTEMPTS times; the reason is cut to one printable line.
report() {
	rp_phase=$1
	rp_body=$(printf '%s' "${2:-}" | tr -c '[:print:]' ' ' | cut -c "1-$KZ_REASON_MAX")
	rp_try=1
	while ! http_post "$KZ_REPORT_URL/$rp_phase" "$rp_body"; do
		if [ "$rp_try" -ge "$KZ_REPORT_ATTEMPTS" ]; then
			log "could not report $rp_phase after $rp_try attempts"
			return 1
		fi
		rp_try=$((rp_try + 1))
		sleep "$KZ_RETRY_SLEEP"
	done
	log "reported $rp_phase${rp_body:+: $rp_body}"
}

power_off() {
	sync
	log "powering off"
	"$KZ_POWEROFF"
	exit "$1"
}

# fail REASON: report `failed` and power off (never reboot into a half-written or unverified disk).
fail() {
	log "failed: $1"
	report failed "$1" || true
	power_off 1
}

# shellcheck disable=SC2317 # called through KZ_DHCP
kz_dhcp() {
	ip link set "$1" up 2>/dev/null || true
	udhcpc -i "$1" -n -q -t 5 -T 3 >/dev/null 2>&1
}

# DHCP on every network interface with a device behind it; true when one got a lease.
network_up() {
	nu_up=no
	for nu_path in "$KZ_SYS_NET"/*; do
		[ -e "$nu_path/device" ] || continue
		nu_if=${nu_path##*/}
		if "$KZ_DHCP" "$nu_if"; then
			log "DHCP lease on $nu_if"
			nu_up=yes
		else
			log "no DHCP lease on $nu_if"
		fi
	done
	[ "$nu_up" = yes ]
}

# on_boot_media NAME: the disk or one of its partitions is mounted (the initramfs leaves the media
# it found the apkovl and the boot repository on mounted), or it carries the cidata or an ISO volume.
on_boot_media() {
	if awk -v dev="/dev/$1" '
		$1 == dev { found = 1 }
		index($1, dev) == 1 && substr($1, length(dev) + 1) ~ /^p?[0-9]+$/ { found = 1 }
		END { exit !found }' "$KZ_PROC_MOUNTS"; then
		return 0
	fi
	bm_ids=$("$KZ_BLKID" "$KZ_DEV_DIR/$1" 2>/dev/null || true)
	case "$bm_ids" in
	*'LABEL="cidata"'* | *'LABEL="CIDATA"'* | *'TYPE="iso9660"'*) return 0 ;;
	esac
	return 1
}

# The disks that may be written, one name a line in /sys/block order: no virtual devices, no
# removable ones (virtual media), none of the boot media.
list_disks() {
	for ld_path in "$KZ_SYS_BLOCK"/*; do
		[ -e "$ld_path" ] || continue
		ld_name=${ld_path##*/}
		case "$ld_name" in
		loop* | ram* | zram* | sr* | fd* | dm-* | md* | nbd* | zd* | mmcblk*boot*) continue ;;
		esac
		[ "$(cat "$ld_path/removable" 2>/dev/null)" = 1 ] && continue
		[ "$(cat "$ld_path/size" 2>/dev/null || echo 0)" -gt 0 ] 2>/dev/null || continue
		on_boot_media "$ld_name" && continue
		printf '%s\n' "$ld_name"
	done
}

is_disk_node() {
	[ -b "$1" ] || { [ "$KZ_FILE_DISKS" = yes ] && [ -f "$1" ]; }
}

sectors_of() {
	cat "$KZ_SYS_BLOCK/$1/size"
}

# zero_edges DEV START COUNT: zero the first and the last MiB of COUNT sectors from START.
zero_edges() {
	ze_n=2048
	[ "$3" -lt "$ze_n" ] && ze_n=$3
	dd if=/dev/zero of="$1" bs=512 seek="$2" count="$ze_n" conv=notrunc 2>/dev/null || return 1
	dd if=/dev/zero of="$1" bs=512 seek="$(($2 + $3 - ze_n))" count="$ze_n" conv=notrunc 2>/dev/null
}

# is_zero DEV START COUNT: the COUNT sectors from START read back as zeros.
is_zero() {
	iz_left=$(dd if="$1" bs=512 skip="$2" count="$3" 2>/dev/null | tr -d '\000' | wc -c | tr -d ' ')
	[ "$iz_left" = 0 ]
}

# Sets ROOT_NAME and ROOT_DISK from KZ_ROOT_DEVICE (a /dev path of a whole disk), else the first
# disk of list_disks.
pick_root_disk() {
	if [ -n "$KZ_ROOT_DEVICE" ]; then
		case "$KZ_ROOT_DEVICE" in
		/dev/*) pr_node="$KZ_DEV_DIR/${KZ_ROOT_DEVICE#/dev/}" ;;
		*) fail "root device $KZ_ROOT_DEVICE is not a /dev path" ;;
		esac
		pr_real=$(readlink -f "$pr_node" 2>/dev/null || printf '%s' "$pr_node")
		ROOT_NAME=${pr_real##*/}
		[ -e "$KZ_SYS_BLOCK/$ROOT_NAME" ] ||
			fail "root device $KZ_ROOT_DEVICE is not a disk of this host (no $KZ_SYS_BLOCK/$ROOT_NAME)"
		on_boot_media "$ROOT_NAME" && fail "root device $KZ_ROOT_DEVICE holds the boot media"
	else
		ROOT_NAME=$(list_disks | head -n 1)
		[ -n "$ROOT_NAME" ] || fail "no disk to install to: no non-removable disk besides the boot media"
	fi
	ROOT_DISK="$KZ_DEV_DIR/$ROOT_NAME"
	is_disk_node "$ROOT_DISK" || fail "$ROOT_DISK is not a block device"
}

# Streams the raw image to ROOT_DISK through a FIFO that feeds the checksum: one download, and
# the hash is of exactly the bytes that were written. Sets IMAGE_SUM.
stream_raw() {
	sr_fifo="$KZ_WORK_DIR/image.fifo"
	mkfifo "$sr_fifo" || fail "could not create $sr_fifo"
	"${KZ_CHECKSUM_ALGO}sum" <"$sr_fifo" >"$KZ_WORK_DIR/image.sum" &
	sr_sum_pid=$!
	{
		kz_wget -O - "$KZ_IMAGE_URL"
		echo "$?" >"$KZ_WORK_DIR/wget.rc"
	} | {
		tee "$sr_fifo"
		echo "$?" >"$KZ_WORK_DIR/tee.rc"
	} | {
		dd of="$ROOT_DISK" bs=4M conv=notrunc 2>"$KZ_WORK_DIR/dd.log"
		echo "$?" >"$KZ_WORK_DIR/dd.rc"
	}
	wait "$sr_sum_pid"
	sr_rc=$(cat "$KZ_WORK_DIR/wget.rc")
	[ "$sr_rc" = 0 ] || scrub_and_fail "download of the image failed (wget exit $sr_rc)"
	sr_rc=$(cat "$KZ_WORK_DIR/dd.rc")
	[ "$sr_rc" = 0 ] || scrub_and_fail "writing $ROOT_DISK failed: $(tail -n 1 "$KZ_WORK_DIR/dd.log")"
	sr_rc=$(cat "$KZ_WORK_DIR/tee.rc")
	[ "$sr_rc" = 0 ] || scrub_and_fail "hashing the image stream failed (tee exit $sr_rc)"
	IMAGE_SUM=$(cut -d ' ' -f 1 "$KZ_WORK_DIR/image.sum")
}

# qcow2 cannot be streamed to a disk: download it to the RAM root, check it, convert it. Sets IMAGE_SUM.
convert_qcow2() {
	command -v "$KZ_QEMU_IMG" >/dev/null 2>&1 ||
		fail "qcow2 images need qemu-img, which the official Alpine ISOs do not carry; use a raw image"
	cq_file="$KZ_WORK_DIR/image.qcow2"
	kz_wget -O "$cq_file" "$KZ_IMAGE_URL" ||
		fail "download of the image failed (wget exit $?)"
	IMAGE_SUM=$("${KZ_CHECKSUM_ALGO}sum" <"$cq_file" | cut -d ' ' -f 1)
	[ "$IMAGE_SUM" = "$KZ_CHECKSUM" ] || fail "$(mismatch) (nothing written)"
	"$KZ_QEMU_IMG" convert -n -f qcow2 -O raw "$cq_file" "$ROOT_DISK" ||
		scrub_and_fail "qemu-img convert to $ROOT_DISK failed"
	rm -f "$cq_file"
}

# scrub_and_fail REASON: nothing may boot a partial or unverified image, so clear the first and
# last MiB of ROOT_DISK (partition tables, boot sector) before failing.
scrub_and_fail() {
	zero_edges "$ROOT_DISK" 0 "$(sectors_of "$ROOT_NAME")" || log "could not clear $ROOT_DISK"
	fail "$1"
}

mismatch() {
	printf 'image checksum mismatch: %s %s expected, %s streamed' "$KZ_CHECKSUM_ALGO" "$KZ_CHECKSUM" "$IMAGE_SUM"
}

install_image() {
	case "$KZ_CHECKSUM_ALGO" in
	sha256 | sha512) ;;
	*) fail "unsupported checksum algorithm $KZ_CHECKSUM_ALGO" ;;
	esac
	pick_root_disk
	log "installing the $KZ_IMAGE_FORMAT image to $ROOT_DISK"
	case "$KZ_IMAGE_FORMAT" in
	raw) stream_raw ;;
	qcow2) convert_qcow2 ;;
	*) fail "unsupported image format $KZ_IMAGE_FORMAT" ;;
	esac
	sync
	report written || true
	[ "$IMAGE_SUM" = "$KZ_CHECKSUM" ] || scrub_and_fail "$(mismatch)"
	# The provider acknowledges `verified` once the next boot is the disk; without that, a reboot
	# could start this installer again, so power off instead and let the phase timeout decide.
	report verified || power_off 1
	sync
	log "rebooting from $ROOT_DISK"
	"$KZ_REBOOT"
	exit 0
}

# wipe_disk NAME: sets WIPE_ERROR on failure.
wipe_disk() {
	wd_dev="$KZ_DEV_DIR/$1"
	is_disk_node "$wd_dev" || {
		WIPE_ERROR="$wd_dev is not a block device"
		return 1
	}
	wd_sectors=$(sectors_of "$1")
	wd_wipefs=no
	command -v "$KZ_WIPEFS" >/dev/null 2>&1 && wd_wipefs=yes
	for wd_part in "$KZ_SYS_BLOCK/$1/$1"*; do
		[ -f "$wd_part/partition" ] || continue
		wd_pname=${wd_part##*/}
		if [ "$wd_wipefs" = yes ] && is_disk_node "$KZ_DEV_DIR/$wd_pname"; then
			"$KZ_WIPEFS" -a "$KZ_DEV_DIR/$wd_pname" >/dev/null 2>&1 || {
				WIPE_ERROR="wipefs -a $KZ_DEV_DIR/$wd_pname failed"
				return 1
			}
		fi
		zero_edges "$wd_dev" "$(cat "$wd_part/start")" "$(cat "$wd_part/size")" || {
			WIPE_ERROR="zeroing partition $wd_pname of $wd_dev failed"
			return 1
		}
	done
	if [ "$wd_wipefs" = yes ]; then
		"$KZ_WIPEFS" -a "$wd_dev" >/dev/null 2>&1 || {
			WIPE_ERROR="wipefs -a $wd_dev failed"
			return 1
		}
	fi
	# Discard before zeroing: a device may read discarded blocks back as anything, so the zeros
	# written after it are what the edges hold in the end.
	if [ "$(cat "$KZ_SYS_BLOCK/$1/queue/discard_max_bytes" 2>/dev/null || echo 0)" != 0 ] &&
		command -v "$KZ_BLKDISCARD" >/dev/null 2>&1; then
		"$KZ_BLKDISCARD" "$wd_dev" >/dev/null 2>&1 || log "discard on $wd_dev failed (zeroing follows)"
	fi
	zero_edges "$wd_dev" 0 "$wd_sectors" || {
		WIPE_ERROR="zeroing $wd_dev failed"
		return 1
	}
	wd_n=2048
	[ "$wd_sectors" -lt "$wd_n" ] && wd_n=$wd_sectors
	if ! is_zero "$wd_dev" 0 "$wd_n" || ! is_zero "$wd_dev" "$((wd_sectors - wd_n))" "$wd_n"; then
		WIPE_ERROR="$wd_dev does not read back as zeros after wiping"
		return 1
	fi
}

wipe_disks() {
	wp_disks=$(list_disks)
	[ -n "$wp_disks" ] || fail "no disk to wipe: no non-removable disk besides the boot media"
	wp_errors=
	for wp_name in $wp_disks; do
		WIPE_ERROR=
		if wipe_disk "$wp_name"; then
			log "wiped $KZ_DEV_DIR/$wp_name"
		else
			log "wiping $wp_name failed: $WIPE_ERROR"
			wp_errors="${wp_errors:+$wp_errors; }$WIPE_ERROR"
		fi
	done
	sync
	[ -z "$wp_errors" ] || fail "wipe failed: $wp_errors"
	report wiped || true
	power_off 0
}

[ -n "$KZ_REPORT_URL" ] || {
	log "KZ_REPORT_URL is not set in $KZ_CONFIG"
	power_off 1
}
WGET_TIMEOUT=no
if "$KZ_WGET" --version 2>/dev/null | grep -q 'GNU Wget' || "$KZ_WGET" --help 2>&1 | grep -q -- '-T SEC'; then
	WGET_TIMEOUT=yes
fi
mkdir -p "$(dirname "$KZ_WORK_DIR")"
mkdir "$KZ_WORK_DIR" 2>/dev/null || {
	log "$KZ_WORK_DIR exists: the installer already ran in this boot"
	exit 0
}
network_up || log "no interface got a DHCP lease; trying anyway"
report started || true
case "$KZ_MODE" in
install) install_image ;;
wipe) wipe_disks ;;
*) fail "unknown installer mode '$KZ_MODE'" ;;
esac
