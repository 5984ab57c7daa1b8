#!/usr/bin/env bash
# Install edge-runtime as a systemd service on Debian / Ubuntu / Raspberry Pi OS (arm64, armhf, amd64).
#
#   sudo systemd/install.sh                 install or upgrade; safe to run again (idempotent)
#   sudo systemd/install.sh --uninstall     remove the unit and the venv; keep config, outbox, user
#   systemd/install.sh --prefix /tmp/stage  write everything under a staging root instead of /:
#                                           no root needed, no useradd/systemctl (printed instead)
#
# What it does (paths under --prefix when given):
#   system user edge-runtime (no login, no home), in the groups video (cameras) and dialout (serial)
#   /opt/edge-runtime/venv                   a venv with edge-runtime and its dependencies
#   /opt/edge-runtime/{README.md,docs,examples}
#   /etc/edge-runtime/config.toml            from systemd/config.example.toml, only if absent
#   /etc/edge-runtime/edge-runtime.env       secrets (EDGE_MQTT_PASSWORD), only if absent, mode 0600
#   /var/lib/edge-runtime                    state: result ids and outboxes (the unit's StateDirectory=)
#   /etc/systemd/system/edge-runtime.service always replaced: local changes go in a drop-in
#   systemctl daemon-reload; systemctl enable edge-runtime (not started: edit the config first)
#
# Options:
#   --source DIR            the edge-runtime source tree (default: this script's parent directory)
#   --prefix DIR            staging root (see above)
#   --python PY             interpreter for the venv (default: python3; >= 3.10)
#   --wheelhouse DIR        offline install: pip --no-index --find-links DIR (wheels of edge-runtime
#                           and every dependency, e.g. made with `pip wheel -w DIR .` on a connected box)
#   --system-site-packages  let the venv see apt's Python packages (e.g. python3-opencv on armhf)
#   --no-venv               do not create or update the venv (files, user and unit only)
#   --uninstall             see above
# Environment:
#   EDGE_RUNTIME_PIP_ARGS   extra arguments for `pip install` (e.g. "--no-deps", "--index-url URL")
set -euo pipefail
# Files the service user must read (the venv, docs) must not inherit a strict root umask.
umask 022

NAME=edge-runtime
USER_NAME=edge-runtime

die() { echo "install.sh: error: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(dirname "$script_dir")
prefix=""
python=python3
wheelhouse=""
site_packages=0
make_venv=1
uninstall=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --source) [[ $# -ge 2 ]] || die "--source needs a directory"; source_dir=$2; shift 2 ;;
    --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --python) [[ $# -ge 2 ]] || die "--python needs an interpreter"; python=$2; shift 2 ;;
    --wheelhouse) [[ $# -ge 2 ]] || die "--wheelhouse needs a directory"; wheelhouse=$2; shift 2 ;;
    --system-site-packages) site_packages=1; shift ;;
    --no-venv) make_venv=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

staging=0
if [[ -n "$prefix" ]]; then
  staging=1
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd)
  [[ "$prefix" != / ]] || die "--prefix / is the real install: run without --prefix"
fi

opt_dir="$prefix/opt/$NAME"
venv="$opt_dir/venv"
etc_dir="$prefix/etc/$NAME"
state_dir="$prefix/var/lib/$NAME"
unit_dir="$prefix/etc/systemd/system"
unit="$unit_dir/$NAME.service"

# Run a command that changes the system outside the prefix; in staging, only say it.
system() {
  if [[ $staging -eq 1 ]]; then
    say "would run:$(printf ' %q' "$@")"
  else
    "$@"
  fi
}

systemd_running() { [[ $staging -eq 0 && -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

# systemctl: for real when systemd runs, printed when staging, skipped otherwise (container, chroot).
sd() {
  if systemd_running || [[ $staging -eq 1 ]]; then
    system systemctl "$@"
  fi
}

if [[ $staging -eq 0 && $(id -u) -ne 0 ]]; then
  die "run as root (sudo $0 ...), or use --prefix DIR to stage the install in a directory"
fi

# ------------------------------------------------------------------------------------ uninstall
if [[ $uninstall -eq 1 ]]; then
  # Stopping drains the service; results not delivered yet stay in the outbox (kept below).
  if [[ -e "$unit" ]]; then
    sd disable --now "$NAME.service" || say "warning: systemctl disable --now failed (above); removing the files anyway"
  fi
  rm -f "$unit"
  sd daemon-reload
  # Only our own directory: the path ends in constants whatever --prefix was.
  if [[ "$opt_dir" == */opt/$NAME ]]; then
    rm -rf -- "$opt_dir"
  fi
  say "removed $unit and $opt_dir"
  say "kept $etc_dir (config, secrets), $state_dir (result ids, outboxes: undelivered results) and the user $USER_NAME"
  say "to remove them too: userdel $USER_NAME; rm -r $etc_dir $state_dir"
  exit 0
fi

# -------------------------------------------------------------------------------------- install
[[ -f "$source_dir/setup.cfg" && -f "$source_dir/systemd/$NAME.service" ]] ||
  die "--source $source_dir is not an edge-runtime source tree (no setup.cfg or systemd/$NAME.service)"
source_dir=$(cd "$source_dir" && pwd)

arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case "$arch" in
  amd64|x86_64|arm64|aarch64) ;;
  armhf|armv7l)
    say "note: armhf (32-bit ARM): PyPI has no armhf wheels for ai-edge-litert, ncnn, zxing-cpp or"
    say "  opencv-python-headless. Raspberry Pi OS's piwheels index (/etc/pip.conf) has some; the rest"
    say "  build from source (apt-get install build-essential cmake; slow). Without ai-edge-litert there is"
    say "  no TFLite detector: set detector = \"ncnn\" or \"none\" in config.toml, or install tflite-runtime if"
    say "  a wheel exists for this Python. A 64-bit OS (arm64) avoids all of this." ;;
  *) say "warning: architecture $arch is untested (supported: amd64, arm64, armhf)" ;;
esac

# System packages (libzbar0 for the ZBar fallback, python3-venv): the repo's own helper.
if [[ -x "$source_dir/scripts/sysdeps.sh" ]]; then
  system "$source_dir/scripts/sysdeps.sh" run
fi

# The service user: a system account, no home, no shell; cameras via video, serial via dialout.
# (Staging checks this host's accounts too, so it prints what a real run here would do.)
for group in video dialout; do
  if ! getent group "$group" >/dev/null; then
    system groupadd --system "$group"
  fi
done
if ! id "$USER_NAME" >/dev/null 2>&1; then
  system useradd --system --user-group --no-create-home --home-dir "/var/lib/$NAME" \
    --shell /usr/sbin/nologin --comment "edge-runtime QR reader service" "$USER_NAME"
fi
system usermod --append --groups video,dialout "$USER_NAME"

# install(1) wrappers: owners only when installing for real (staging runs unprivileged).
own() { [[ $staging -eq 1 ]] || echo "-o $1 -g $2"; }
# shellcheck disable=SC2046
install -d -m 0755 "$opt_dir" "$unit_dir"
# shellcheck disable=SC2046
install -d -m 0755 $(own root root) "$etc_dir"
# shellcheck disable=SC2046
install -d -m 0750 $(own "$USER_NAME" "$USER_NAME") "$state_dir"

# The venv. Created once; upgraded in place on every run (a dead venv, e.g. after a Python
# upgrade by apt, is recreated).
if [[ $make_venv -eq 1 ]]; then
  if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "the venv's python does not run any more; recreating $venv"
    rm -rf -- "$venv"
  fi
  if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
      die "$python is missing or older than 3.10 (use --python /usr/bin/python3.11)"
    # The venv links to its base interpreter; under /root or /home (pyenv, a user's own
    # Python) the service cannot run it: ProtectHome=yes hides those, and so do their modes.
    base=$("$python" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')
    case "$base" in
      /root/*|/home/*|/run/user/*)
        if [[ $staging -eq 0 ]]; then
          die "$python is $base, under a home directory the service cannot see (ProtectHome=yes); use --python /usr/bin/python3"
        fi
        say "warning: $base is under a home directory: fine for staging, not for the service" ;;
    esac
    venv_args=()
    [[ $site_packages -eq 1 ]] && venv_args+=(--system-site-packages)
    say "creating $venv"
    "$python" -m venv "${venv_args[@]}" "$venv" ||
      die "cannot create a venv with $python (Debian: apt-get install python3-venv)"
  fi
  # shellcheck disable=SC2206
  pip_args=(--disable-pip-version-check --no-input -q ${EDGE_RUNTIME_PIP_ARGS:-})
  if [[ -n "$wheelhouse" ]]; then
    [[ -d "$wheelhouse" ]] || die "--wheelhouse $wheelhouse is not a directory"
    target="$NAME"
    pip_args+=(--no-index --find-links "$wheelhouse" --upgrade)
  else
    target="$source_dir"   # pip rebuilds and reinstalls a source directory on every run
  fi
  say "installing $NAME into $venv (pip install $target)"
  "$venv/bin/python" -m pip install "${pip_args[@]}" "$target" ||
    die "pip install failed (above); the previous install, if any, is unchanged in $venv"
fi

# Documentation and the full config reference next to the venv.
install -d -m 0755 "$opt_dir/docs" "$opt_dir/examples"
install -m 0644 "$source_dir/README.md" "$opt_dir/README.md"
for doc in docs/systemd.md examples/config.toml; do
  if [[ -f "$source_dir/$doc" ]]; then
    install -m 0644 "$source_dir/$doc" "$opt_dir/$doc"
  fi
done
install -m 0644 "$source_dir/systemd/config.example.toml" "$opt_dir/examples/config.service.toml"

# Config and secrets: written once, never overwritten (they are the operator's from then on).
# config.toml is readable by the service's group only; the env file by root only (systemd reads
# it before dropping privileges).
if [[ ! -e "$etc_dir/config.toml" ]]; then
  # shellcheck disable=SC2046
  install -m 0640 $(own root "$USER_NAME") "$source_dir/systemd/config.example.toml" "$etc_dir/config.toml"
  say "wrote $etc_dir/config.toml: edit it (device, broker), then start the service"
else
  say "kept $etc_dir/config.toml (the current example is $opt_dir/examples/config.service.toml)"
fi
if [[ ! -e "$etc_dir/$NAME.env" ]]; then
  # shellcheck disable=SC2046
  install -m 0600 $(own root root) "$source_dir/systemd/$NAME.env" "$etc_dir/$NAME.env"
fi

# The unit: always the current one (local changes belong in `systemctl edit edge-runtime`).
install -m 0644 "$source_dir/systemd/$NAME.service" "$unit"

sd daemon-reload
sd enable "$NAME.service"
if systemd_running; then
  if systemctl is-active --quiet "$NAME.service"; then
    # Not restarted here: that would stop a running line at an arbitrary moment.
    say "$NAME is running the previous version; restart it when the line allows: systemctl restart $NAME"
  else
    say "enabled (starts at boot). Start now: systemctl start $NAME; follow: journalctl -u $NAME -f"
  fi
elif [[ $staging -eq 0 ]]; then
  say "systemd is not running here (container, chroot?): enable later with systemctl enable --now $NAME"
fi
say "done: $unit, $venv, $etc_dir/config.toml"
