#!/usr/bin/env bash
# `make check-arm64`: edge-runtime installed and run on arm64 (Debian, Raspberry Pi 4/5, RK3588)
# under qemu user emulation, compared with this x86 machine.
#
#   1. binfmt_misc mounted, qemu-aarch64 registered (F flag): otherwise it says so and FAILS
#   2. an arm64 Debian root (mmdebstrap minbase + python3, python3-venv, libzbar0), cached under
#      $ARM64_CACHE/root-<release>-<hash of release, packages, mirror>; each run works on a copy
#   3. the project's wheel and an aarch64 wheelhouse (`pip download`, cached under
#      $ARM64_CACHE/wheels-cp<ver>-<hash of the pinned requirements>): install_requires of setup.cfg
#      pinned to the versions of the host's .venv, so both sides run the same libraries
#   4. inside the root, as a board would: systemd/install.sh --wheelhouse (offline)
#   5. under emulation: imports; `edge-runtime models --test` with tflite and ncnn; `decode --json`
#      with --detector tflite, ncnn, none on generated frames compared with the host's
#      results (same payloads, corners within 1 px); check-config on the installed config;
#      `edge-runtime run` on the synthetic source into jsonl compared with the host's; the tests
#      that need no systemd/mosquitto/socat
#   6. one summary line; exit status non-zero on any difference or failure
#
# Environment: ARM64_RELEASE (bookworm | trixie, default bookworm), ARM64_CACHE (default
# /var/cache/edge-runtime-arm64), ARM64_MIRROR (default: this machine's Debian mirror),
# ARM64_RUN_FRAMES (default 240), ARM64_TESTS / ARM64_DESELECT (the pytest selection), ARM64_CPU
# (the emulated CPU: cortex-a72 = Raspberry Pi 4, the default: ARMv8.0, no dot product; cortex-a76 =
# Raspberry Pi 5 / RK3588), ARM64_KEEP=1 keeps the work copy. trixie (Python 3.13) is not yet run in CI.
# Needs root (chroot, mounts) and the Debian packages of `scripts/sysdeps.sh arm64`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
t_start=$(date +%s)

release=${ARM64_RELEASE:-bookworm}
cache=${ARM64_CACHE:-/var/cache/edge-runtime-arm64}
run_frames=${ARM64_RUN_FRAMES:-240}
cpu=${ARM64_CPU:-cortex-a72}
packages=python3,python3-venv,libzbar0,ca-certificates
tests=${ARM64_TESTS:-tests/test_track.py tests/test_serial_frame.py tests/test_qrgrid.py tests/test_reader.py tests/test_detect.py}
# Not under emulation: a timing test (which runtime is faster here: meaningless at 10-50x) and
# three fuzz loops of pure-Python grid decoding (4.5 of the 8.5 emulated minutes; they test no
# arm64-specific code).
deselect=${ARM64_DESELECT:-not (faster_on_this_cpu or blobs_and_fake_codes or beyond_capacity or random_grids_never_read)}
host_py=$repo/.venv/bin/python
case "$release" in
  bookworm) pyver=3.11 glibc_minor=36 ;;
  trixie) pyver=3.13 glibc_minor=41 ;;
  *) echo "check-arm64: ARM64_RELEASE=$release: bookworm or trixie" >&2; exit 2 ;;
esac

fail() { echo "check-arm64: FAILED ($release/arm64, $(( $(date +%s) - t_start )) s): $*"; exit 1; }
step() { echo "check-arm64: [$(( $(date +%s) - t_start ))s] $*" >&2; }

[[ $(id -u) -eq 0 ]] || fail "needs root (mount binfmt_misc, mmdebstrap, chroot): sudo make check-arm64"
[[ -x $host_py ]] || fail "no $host_py: run make setup-test first (the x86 reference runs there)"
for tool in mmdebstrap update-binfmts arch-test qemu-aarch64-static; do
  command -v "$tool" >/dev/null || fail "$tool missing: scripts/sysdeps.sh arm64 installs qemu-user-static binfmt-support mmdebstrap arch-test"
done

# ---------------------------------------------------------------------------------- 1. binfmt
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    fail "binfmt_misc is not mounted and cannot be mounted here (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc: not permitted in this container?): arm64 programs cannot run, nothing was checked"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] ||
  fail "qemu-aarch64 is not registered in binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
  fail "qemu-aarch64 is registered without the F flag: a chroot cannot find the emulator"
arch-test arm64 >/dev/null 2>&1 || fail "arch-test arm64: this machine cannot run arm64 programs"

# ---------------------------------------------------------------------------------- 2. the root
mirror=${ARM64_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list |
    grep -v security | grep -oE 'https?://[^ ]+' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
mkdir -p "$cache"
root_key=$(printf '%s\n' "$release" arm64 minbase "$packages" "$mirror" | sha256sum | cut -c1-16)
root_cache=$cache/root-$release-$root_key
root_state=cached
if [[ ! -x $root_cache/usr/bin/python3 ]]; then
  root_state=built
  step "building the arm64 root $root_cache (mmdebstrap $release, ~5 min)"
  rm -rf "$root_cache.tmp"
  mmdebstrap --quiet --arch=arm64 --variant=minbase --include="$packages" "$release" "$root_cache.tmp" "$mirror" ||
    fail "mmdebstrap $release arm64 from $mirror failed (above)"
  rm -rf "$root_cache.tmp/var/cache/apt/archives/"*.deb "$root_cache.tmp/var/lib/apt/lists/"* 2>/dev/null || true
  mv "$root_cache.tmp" "$root_cache"
fi

# ---------------------------------------------------------------------------------- 3. wheels
work=$(mktemp -d "$cache/work-$release.XXXXXX")
root=$work/root
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  # Never rm -rf through a mount that is still there (the root's /dev is the host's /dev).
  if grep -qF " $work/" /proc/mounts; then
    echo "check-arm64: mounts left under $work (see /proc/mounts): not removing it" >&2
  elif [[ ${ARM64_KEEP:-0} != 1 ]]; then rm -rf "$work"; else echo "check-arm64: kept $work" >&2; fi
}
trap cleanup EXIT

reqs=$work/requirements.txt
"$host_py" scripts/check_arm64.py requirements "$host_py" > "$reqs" || fail "cannot list the requirements"
cpv=${pyver/./}
wh_key=$( (cat "$reqs"; echo "cp$cpv aarch64") | sha256sum | cut -c1-16)
wh_cache=$cache/wheels-cp$cpv-$wh_key
wh_state=cached
if [[ ! -f $wh_cache/.complete ]]; then
  wh_state=downloaded
  step "downloading aarch64 wheels for cp$cpv into $wh_cache"
  rm -rf "$wh_cache.tmp"; mkdir -p "$wh_cache.tmp"
  # Every manylinux tag the release's glibc runs (bookworm 2.36, trixie 2.41), as pip would on the board.
  platforms=(--platform manylinux2014_aarch64)
  for ((minor = 17; minor <= glibc_minor; minor++)); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
  "$host_py" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    "${platforms[@]}" \
    --python-version "$pyver" --implementation cp --abi "cp$cpv" --abi abi3 --abi none \
    -d "$wh_cache.tmp" -r "$reqs" >"$work/download.log" 2>&1 ||
    { grep -v '^WARNING: Location' "$work/download.log" >&2; fail "pip download of the aarch64 wheels failed (above)"; }
  touch "$wh_cache.tmp/.complete"
  rm -rf "$wh_cache"; mv "$wh_cache.tmp" "$wh_cache"
fi
step "copying the root, the wheelhouse and the source tree"
cp -a "$root_cache" "$root"
mkdir -p "$root/tmp/wheelhouse" "$root/tmp/src"
cp "$wh_cache"/*.whl "$root/tmp/wheelhouse/"
"$host_py" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$root/tmp/wheelhouse" . \
  >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log" >&2; fail "building the project's wheel failed"; }
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$root/tmp/src"

for m in proc dev sys; do mkdir -p "$root/$m"; done
mount -t proc proc "$root/proc" || fail "mount proc in the root"; mounted+=("$root/proc")
mount --rbind /dev "$root/dev" || fail "bind /dev into the root"; mounted+=("$root/dev")
mount -t sysfs sysfs "$root/sys" || fail "mount sysfs in the root"; mounted+=("$root/sys")
# Under qemu-user /proc/cpuinfo is the host's (x86): the cpuinfo library that XNNPACK (TFLite)
# uses then segfaults in allocate_tensors. A board shows its own; give the root the board's.
case "$cpu" in
  cortex-a72) part=0xd08 features="fp asimd evtstrm crc32 cpuid" ;;
  cortex-a76) part=0xd0b features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  *) fail "ARM64_CPU=$cpu: cortex-a72 or cortex-a76" ;;
esac
for ((i = 0; i < $(nproc); i++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$i" "$features" "$part"
done >"$work/cpuinfo"
mount --bind "$work/cpuinfo" "$root/proc/cpuinfo" || fail "bind cpuinfo into the root"; mounted+=("$root/proc/cpuinfo")

# Everything inside runs with a clean environment, as root of the board.
# QEMU_CPU: the board's CPU features (getauxval), so the wheels' kernels are the ones it runs.
inroot() { chroot "$root" /usr/bin/env -i QEMU_CPU="$cpu" HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 "$@"; }
machine=$(inroot /usr/bin/python3 -c 'import platform; print(platform.machine(), platform.python_version())')
[[ $machine == aarch64\ * ]] || fail "python3 in the root reports '$machine', not aarch64"
step "root: $machine, $cpu ($root_state), wheelhouse $wh_state"

# ---------------------------------------------------------------------------------- 4. install
step "systemd/install.sh --wheelhouse (inside the root, under emulation)"
inroot bash /tmp/src/systemd/install.sh --source /tmp/src --wheelhouse /tmp/wheelhouse >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "systemd/install.sh --wheelhouse failed inside the root"; }
venv=/opt/edge-runtime/venv
er=$venv/bin/edge-runtime
[[ -x $root$er && -f $root/etc/edge-runtime/config.toml && -f $root/etc/systemd/system/edge-runtime.service ]] ||
  fail "install.sh left no $er, /etc/edge-runtime/config.toml or the unit"
inroot id edge-runtime >/dev/null || fail "install.sh created no edge-runtime user"
inroot "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --find-links /tmp/wheelhouse pytest hypothesis qrcode \
  >"$work/pytest-install.log" 2>&1 || { cat "$work/pytest-install.log" >&2; fail "installing pytest into the root's venv failed"; }

# ---------------------------------------------------------------------------------- 5. checks
results=()
step "imports"
inroot "$venv/bin/python" -c '
import platform, sys
import numpy, cv2, zxingcpp, ncnn, ai_edge_litert, PIL, pyzbar.pyzbar, paho.mqtt, serial, pymodbus, asyncua, segno, reedsolo
import edge_runtime, edge_runtime.reader, edge_runtime.service.loop, edge_runtime.decode.qr_grid
from edge_runtime import decode as decoders
assert platform.machine() == "aarch64", platform.machine()
missing = [n for n in ("zxing", "opencv", "zbar") if decoders.load(n) is None]
assert not missing, f"decoders not loadable: {missing}"
from importlib.metadata import version
print(" ".join(f"{p} {version(p)}" for p in ("edge-runtime", "numpy", "opencv-python-headless", "zxing-cpp", "ncnn", "ai-edge-litert")))
' >"$work/imports.log" 2>&1 || { cat "$work/imports.log" >&2; fail "imports inside the root"; }
results+=("imports")

step "edge-runtime models --test, each runtime"
for det in tflite ncnn; do
  printf '[reader]\ndetector = "%s"\n[source]\nkind = "synthetic"\n[[sinks]]\nkind = "stdout"\n' "$det" > "$root/tmp/models-$det.toml"
  inroot "$er" models --test --json --config "/tmp/models-$det.toml" >"$work/models-$det.json" 2>"$work/models-$det.err" ||
    { cat "$work/models-$det.err" "$work/models-$det.json" >&2; fail "edge-runtime models --test with detector $det"; }
done
"$host_py" scripts/check_arm64.py check-models "$work/models-tflite.json" "$work/models-ncnn.json" >"$work/models.txt" ||
  { cat "$work/models.txt" >&2; fail "model self-test: $(head -n1 "$work/models.txt")"; }
results+=("models $(head -n1 "$work/models.txt")")

step "decode --json: generated frames, x86 vs arm64"
"$host_py" scripts/check_arm64.py frames "$root/tmp/frames" >/dev/null || fail "generating the frames"
codes_total=0
for det in tflite ncnn none; do
  "$host_py" -m edge_runtime decode --json --detector "$det" "$root/tmp/frames" >"$work/x86-$det.jsonl" ||
    fail "decode --detector $det on x86 (exit $?)"
  inroot "$er" decode --json --detector "$det" /tmp/frames >"$work/arm-$det.jsonl" 2>"$work/arm-$det.err" ||
    { tail -n 5 "$work/arm-$det.err" >&2; fail "decode --detector $det inside the root"; }
  out=$("$host_py" scripts/check_arm64.py compare-decode "$work/x86-$det.jsonl" "$work/arm-$det.jsonl") ||
    { echo "$out" >&2; fail "decode --detector $det differs from x86: $(head -n1 <<<"$out")"; }
  results+=("decode $det: $(head -n1 <<<"$out")")
done

step "check-config on the installed config"
inroot "$er" check-config /etc/edge-runtime/config.toml >"$work/check-config.log" 2>&1 ||
  { cat "$work/check-config.log" >&2; fail "check-config /etc/edge-runtime/config.toml inside the root"; }
results+=("check-config")

step "edge-runtime run: synthetic source, $run_frames frames -> jsonl, x86 vs arm64"
for side in x86 arm; do
  d=$work/run-$side
  [[ $side == arm ]] && d=$root/tmp/run-arm
  mkdir -p "$d"
  cfgdir=$d; [[ $side == arm ]] && cfgdir=/tmp/run-arm
  # A deadline far beyond any frame: emulation is 10-50x slower, and a 33 ms budget would cut
  # different retries on each side; what is compared is what the code computes. Likewise the
  # tracker ends a track after window_s of wall time unseen: at the ~1 frame/s of emulation a
  # label missed in 2-3 frames would start a new track (a second result) that x86 at 60 frames/s
  # never sees. A window longer than the run keeps both sides on frame order alone.
  cat >"$d/config.toml" <<EOF
device_id = "arm64-check"
state_dir = "$cfgdir/state"
[reader]
deadline_ms = 60000
[dedup]
window_s = 3600
[source]
kind = "synthetic"
frames = $run_frames
seed = 3
realtime = false
[log]
level = "warning"
[[sinks]]
kind = "jsonl"
path = "$cfgdir/results.jsonl"
EOF
done
timeout 600 "$host_py" -m edge_runtime run --config "$work/run-x86/config.toml" >"$work/run-x86.log" 2>&1 ||
  { tail -n 5 "$work/run-x86.log" >&2; fail "edge-runtime run on x86"; }
timeout 1800 chroot "$root" /usr/bin/env -i QEMU_CPU="$cpu" HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 \
  "$er" run --config /tmp/run-arm/config.toml >"$work/run-arm.log" 2>&1 ||
  { tail -n 5 "$work/run-arm.log" >&2; fail "edge-runtime run inside the root"; }
out=$("$host_py" scripts/check_arm64.py compare-run "$work/run-x86/results.jsonl" "$root/tmp/run-arm/results.jsonl") ||
  { echo "$out" >&2; fail "edge-runtime run differs from x86: $(head -n1 <<<"$out")"; }
results+=("run: $(head -n1 <<<"$out")")

step "tests (no systemd/mosquitto/socat): $tests"
# shellcheck disable=SC2086
inroot bash -c "cd /tmp/src && $venv/bin/python -m pytest -q -p no:cacheprovider -k '$deselect' $tests" >"$work/pytest.log" 2>&1 ||
  { tail -n 30 "$work/pytest.log" >&2; fail "tests inside the root: $(tail -n1 "$work/pytest.log")"; }
results+=("tests: $(tail -n1 "$work/pytest.log" | tr -d '=' | sed 's/^ *//;s/ *$//')")

secs=$(( $(date +%s) - t_start ))
summary=$(IFS=';'; echo "${results[*]}")
echo "check-arm64: OK $release/arm64 $cpu (python $pyver, root $root_state, wheels $wh_state) in $secs s: ${summary//;/; }"
