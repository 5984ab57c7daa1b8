"""systemd/install.sh in a staging prefix: idempotent, never overwrites config, uninstall keeps data.

The staging prefix (--prefix DIR) writes the whole install under DIR and only prints what it
would do to accounts and systemd, so these tests need neither root nor a running systemd.
One test really creates the venv and pip-installs edge-runtime into it; to stay fast and
offline it installs from a wheel built here (--wheelhouse, EDGE_RUNTIME_PIP_ARGS=--no-deps)
and borrows the dependencies (numpy, OpenCV...) from this project's venv via PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "systemd" / "install.sh"
UNIT = ROOT / "systemd" / "edge-runtime.service"
EXAMPLE = ROOT / "systemd" / "config.example.toml"
ENV_EXAMPLE = ROOT / "systemd" / "edge-runtime.env"
SOURCE_PARTS = ["edge_runtime", "quantize", "models", "setup.cfg", "pyproject.toml", "README.md",
                "systemd", "docs", "examples", "scripts"]


def run_install(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    if check:
        assert p.returncode == 0, f"install.sh {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode and content hash (bytecode caches excluded:
    running Python between two installs writes them, the installer does not)."""
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def host_accounts() -> str:
    """What this host knows about the service user, to prove staging never touches it."""
    try:
        return repr(pwd.getpwnam("edge-runtime"))
    except KeyError:
        return "absent"


def unit_value(key: str) -> str:
    for line in UNIT.read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{key}= not in {UNIT}")


def test_staging_install_twice_is_idempotent_and_never_overwrites_config(tmp_path):
    stage = tmp_path / "root"
    accounts = host_accounts()
    first = run_install("--prefix", str(stage), "--no-venv")
    tree = snapshot(stage)

    # The layout the unit expects, with the right modes.
    unit = stage / "etc/systemd/system/edge-runtime.service"
    config = stage / "etc/edge-runtime/config.toml"
    secrets = stage / "etc/edge-runtime/edge-runtime.env"
    state = stage / "var/lib/edge-runtime"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert config.read_bytes() == EXAMPLE.read_bytes()
    assert secrets.read_bytes() == ENV_EXAMPLE.read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert (stage / "opt/edge-runtime/docs/systemd.md").is_file()
    assert (stage / "opt/edge-runtime/examples/config.service.toml").read_bytes() == EXAMPLE.read_bytes()
    # Staging prints the system changes instead of making them.
    assert "would run: systemctl enable edge-runtime.service" in first.stdout
    assert "would run: systemctl daemon-reload" in first.stdout
    assert host_accounts() == accounts

    # Second run: byte-for-byte the same tree.
    run_install("--prefix", str(stage), "--no-venv")
    assert snapshot(stage) == tree

    # The operator edits config and secrets; a re-install (an upgrade) keeps both.
    config.write_text(config.read_text().replace('device_id = "line1-cam1"', 'device_id = "line7-pda2"'))
    secrets.write_text("EDGE_MQTT_PASSWORD=s3cret\n")
    edited = snapshot(stage)
    third = run_install("--prefix", str(stage), "--no-venv")
    assert snapshot(stage) == edited
    assert 'device_id = "line7-pda2"' in config.read_text()
    assert secrets.read_text() == "EDGE_MQTT_PASSWORD=s3cret\n"
    assert "kept" in third.stdout and "config.toml" in third.stdout

    # A changed unit in the prefix is replaced by the shipped one (local changes go in drop-ins).
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    run_install("--prefix", str(stage), "--no-venv")
    assert unit.read_bytes() == UNIT.read_bytes()


def test_uninstall_removes_unit_and_venv_but_keeps_config_and_outbox(tmp_path):
    stage = tmp_path / "root"
    run_install("--prefix", str(stage), "--no-venv")
    (stage / "opt/edge-runtime/venv/bin").mkdir(parents=True)  # stands in for the venv here
    outbox = stage / "var/lib/edge-runtime/outbox-plant.sqlite"
    outbox.write_bytes(b"undelivered results")
    config = stage / "etc/edge-runtime/config.toml"
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    kept = {k: v for k, v in snapshot(stage).items() if k.startswith(("etc/edge-runtime", "var/"))}

    out = run_install("--prefix", str(stage), "--uninstall")
    assert not (stage / "etc/systemd/system/edge-runtime.service").exists()
    assert not (stage / "opt/edge-runtime").exists()
    after = snapshot(stage)
    assert {k: v for k, v in after.items() if k.startswith(("etc/edge-runtime", "var/"))} == kept
    assert "would run: systemctl disable --now edge-runtime.service" in out.stdout
    assert "kept" in out.stdout

    # Uninstalling again is harmless.
    run_install("--prefix", str(stage), "--uninstall")
    assert snapshot(stage) == after


def _source_copy(dst: Path) -> Path:
    """The parts of the repo a release tarball has: build artefacts then land in tmp, not in the repo."""
    dst.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for part in SOURCE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dst / part)
    return dst


def test_real_venv_install_is_idempotent_and_runs_the_installed_package(tmp_path):
    src = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(src)], check=True, timeout=300, capture_output=True)
    stage = tmp_path / "root"
    args = ("--prefix", str(stage), "--source", str(src), "--python", sys.executable, "--wheelhouse", str(wheels))
    env = {"EDGE_RUNTIME_PIP_ARGS": "--no-deps"}
    run_install(*args, env=env)

    venv = stage / "opt/edge-runtime/venv"
    # The unit's ExecStart names the installed console script and the installed config.
    exec_start = unit_value("ExecStart").split()
    binary, config = exec_start[0], exec_start[exec_start.index("--config") + 1]
    assert Path(str(stage) + binary) == venv / "bin/edge-runtime"
    assert (venv / "bin/edge-runtime").is_file() and os.access(venv / "bin/edge-runtime", os.X_OK)
    assert Path(str(stage) + config).is_file()

    # The installed package (not the repo's) runs and accepts the installed config. Its
    # dependencies come from this project's venv: they were left out to stay offline.
    deps = {"PYTHONPATH": sysconfig.get_paths()["purelib"]}
    where = subprocess.run([str(venv / "bin/python"), "-c", "import edge_runtime; print(edge_runtime.__file__)"],
                           capture_output=True, text=True, timeout=60, env={**os.environ, **deps}, check=True,
                           cwd=tmp_path)  # not the repo: `python -c` puts the cwd first on sys.path
    assert where.stdout.strip().startswith(str(venv))
    check = subprocess.run([str(venv / "bin/edge-runtime"), "check-config", str(stage) + config],
                           capture_output=True, text=True, timeout=120, env={**os.environ, **deps}, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert 'device_id = "line1-cam1"' in check.stdout

    tree = snapshot(stage)
    second = run_install(*args, env=env)
    assert "creating" not in second.stdout  # the venv is reused, not rebuilt
    assert snapshot(stage) == tree

    run_install("--prefix", str(stage), "--uninstall")
    assert not venv.exists()
    assert (stage / "etc/edge-runtime/config.toml").is_file()
    assert (stage / "var/lib/edge-runtime").is_dir()


def test_bad_source_and_options_are_one_line_errors(tmp_path):
    p = run_install("--prefix", str(tmp_path / "root"), "--source", str(tmp_path), check=False)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert "not an edge-runtime source tree" in p.stderr and str(tmp_path) in p.stderr
    p = run_install("--frobnicate", check=False)
    assert p.returncode == 2 and "unknown option --frobnicate" in p.stderr
    p = run_install("--prefix", check=False)
    assert p.returncode == 2 and "--prefix needs a directory" in p.stderr



def test_editable_install_of_a_fresh_checkout_prints_no_warnings(tmp_path):
    """`make run`'s `pip install -q -e .` must print nothing but progress (issue 16): no setuptools
    banner about edge_runtime.data missing from `packages`, none about the editable strategy.
    Offline: no dependencies, the build backend of this venv, a staging prefix instead of a venv."""
    src = _source_copy(tmp_path / "src")
    prefix = tmp_path / "prefix"
    # --ignore-installed: pip would otherwise uninstall the running venv's own edge-runtime first
    # (--prefix does not isolate uninstalls), leaving the test suite without its package.
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
                        "--no-warn-script-location", "--prefix", str(prefix), "-e", str(src)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr.lower(), p.stderr
    assert p.stderr.strip() == "", p.stderr
    # The checkout itself is what the editable install points at (a plain .pth, no import hook).
    pth = [f.read_text().strip() for f in prefix.rglob("__editable__*.pth")]
    assert pth == [str(src)]


def test_readme_make_test_line_lists_the_system_packages_sysdeps_installs():
    """The README's `make test` line names what scripts/sysdeps.sh installs for the tests (issue 16:
    openssl was missing), so that someone without root can install them by hand."""
    import re

    script = (ROOT / "scripts" / "sysdeps.sh").read_text()
    wanted = re.search(r"^want=\((.*?)\)", script, re.M).group(1).split()
    wanted += re.search(r"== test \]\] && want\+=\((.*?)\)", script).group(1).split()
    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("make test"))
    listed = re.search(r"need \(([^;]*);", line).group(1).split(", ")
    assert listed == wanted
