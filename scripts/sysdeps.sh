#!/usr/bin/env bash
# Install the Debian packages edge-runtime needs, or say exactly which are missing.
#   sysdeps.sh run   -> libzbar0 (ZBar fallback; the reader works without it, one warning)
#   sysdeps.sh test  -> also mosquitto and socat (the tests start their own broker and pty pairs),
#                       openssl (TLS test certificates), systemd (systemd-analyze checks the unit
#                       file) and procps (/bin/kill, the unit's ExecReload; verify refuses a unit
#                       whose command is missing); a minimal Debian or a container has neither;
#                       chromium (the web view's browser tests drive it with playwright);
#                       postgresql (the collector's tests initdb their own server on a free port)
#   sysdeps.sh arm64 -> for `make check-arm64`: qemu-user-static (runs arm64 programs), binfmt-support
#                       (update-binfmts registers it), mmdebstrap (builds the arm64 Debian root),
#                       arch-test (proves the emulation works before anything else runs)
set -euo pipefail
want=(libzbar0)
[[ "${1:-run}" == arm64 ]] && want+=(qemu-user-static binfmt-support mmdebstrap arch-test)
[[ "${1:-run}" == test ]] && want+=(mosquitto socat openssl systemd procps chromium postgresql)

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A venv needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip' 2>/dev/null || missing+=("python3-venv")
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  [[ "${1:-run}" == test || "${1:-run}" == arm64 ]] && exit 1
  exit 0  # `make run` carries on: only the ZBar fallback is lost, and the reader says so
fi
