#!/usr/bin/env python3
"""Helper of scripts/check_arm64.sh: what to download, what to decode, and the comparisons.

  check_arm64.py requirements VENV_PY   install_requires of setup.cfg, each pinned (==) to the
                                        version the host's venv has, plus the test tools; so the
                                        arm64 root runs the same library versions as x86
  check_arm64.py frames DIR             write the generated frames (PNG) both sides decode
  check_arm64.py compare-decode X86 ARM  two `decode --json` outputs: same payloads per image,
                                        corners within 1 px; prints one line, exit 1 on a difference
  check_arm64.py check-models JSON...   `models --test --json` per runtime: that runtime, self-test passed
  check_arm64.py compare-run X86 ARM    two jsonl ledgers of `edge-runtime run` on the synthetic
                                        source: same ids, kinds, payloads, frames; corners within 1 px

Runs with the host's venv python (frames needs edge_runtime) or any python3 (the rest).
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_TOOLS = ["pytest", "hypothesis", "qrcode"]
CORNER_TOL_PX = 1.0
# Which attempt reads a code first can differ between two runs of the same code: the reader
# races its retries and the whole-frame cascade on worker threads and orders them by the costs
# it learned while running, and under emulation every cost is different. Two attempts locate
# the same code a little differently (zxing-cpp on the rectified crop vs ZBar on the frame:
# up to ~2 px seen), so corners are compared at 1 px when the same decoder and stage read the
# code on both sides, and a code read by another path is counted, listed, and held to this:
OTHER_PATH_TOL_PX = 4.0
# A result may come a few frames apart: a noread is emitted when its label's track ends (its
# frame is the last sighting's), and a hard label's first read can come from a marginal attempt
# (ZBar on a glared crop) whose input can differ in its last bits between the two builds of OpenCV
# and the model's kernels: seen, label 14 of seed 3 read by ZBar in frame 226 on x86 and 228 on
# arm64, because the detector's rests put its tries on other frames. Same id, kind and payload,
# held to SHIFT_FRAMES, counted and listed in the summary.
SHIFT_FRAMES = 3


def requirements(venv_py: str) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    frozen = subprocess.run([venv_py, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    have = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(frozen)}
    out = []
    for r in reqs + TEST_TOOLS:
        spec, _, marker = r.partition(";")
        name = spec
        for op in ("<", ">", "=", "!", "~", "["):
            name = name.split(op)[0]
        name = name.strip().lower().replace("_", "-")
        if marker.strip() and "python_version" in marker:
            continue  # tomli: only for Python < 3.11; the targets have 3.11 and 3.13
        out.append(f"{name}=={have[name]}" if name in have else spec.strip())
    return out


def frames(out: Path) -> None:
    """Frames of the synthetic conveyor (several labels, some degraded) and a few clean codes at
    angles: the same bytes on both sides, read from PNG."""
    import cv2

    sys.path.insert(0, str(ROOT))  # this checkout's generator, whatever the venv has installed
    from edge_runtime.synth.conveyor import SyntheticConveyor

    out.mkdir(parents=True, exist_ok=True)
    conv = SyntheticConveyor(seed=7)
    n = 0
    for f in range(0, 240, 12):
        img, _truth = conv.frame_at(f)
        cv2.imwrite(str(out / f"conveyor-{f:04d}.png"), img)
        n += 1
    import segno

    for i, angle in enumerate((0, 17, 45, 80)):
        qr = segno.make_qr(f"ARM64-CHECK-{i}-{angle}", error="m")
        m = 1 - __import__("numpy").array(qr.matrix, dtype="uint8")
        img = cv2.resize(m * 255, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
        img = cv2.copyMakeBorder(img, 120, 120, 160, 160, cv2.BORDER_CONSTANT, value=255)
        h, w = img.shape
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        img = cv2.warpAffine(img, rot, (w, h), borderValue=255)
        cv2.imwrite(str(out / f"clean-{i}-{angle:02d}.png"), img)
        n += 1
    print(f"{n} frames in {out}")


def _load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _corner_gap(a: list, b: list) -> float:
    if not a and not b:
        return 0.0
    if len(a) != len(b):
        return float("inf")
    return max(max(abs(p[0] - q[0]), abs(p[1] - q[1])) for p, q in zip(a, b))


def _key(c: dict) -> str:
    return c.get("bytes_b64") or c.get("text") or ""


def _path(c: dict) -> str:
    return f"{c.get('decoder')}/{c.get('stage')}"


class Corners:
    """Corner comparisons: worst gap on the same read path, codes read by another path."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.other: list[str] = []

    def check(self, where: str, p: dict, q: dict) -> str | None:
        gap = _corner_gap(p.get("corners") or [], q.get("corners") or [])
        if _path(p) == _path(q):
            self.worst = max(self.worst, gap)
            if gap > CORNER_TOL_PX:
                return f"{where}: {_key(p)!r} ({_path(p)}) corners differ by {gap:.2f} px: x86={p['corners']} arm64={q['corners']}"
            return None
        self.other.append(f"{where} {_key(p)!r}: x86 {_path(p)}, arm64 {_path(q)}, {gap:.1f} px")
        if gap > OTHER_PATH_TOL_PX:
            return (f"{where}: {_key(p)!r} read by x86 {_path(p)} / arm64 {_path(q)}, corners {gap:.2f} px apart "
                    f"(> {OTHER_PATH_TOL_PX:g}): x86={p['corners']} arm64={q['corners']}")
        return None

    def text(self) -> str:
        t = f"corners within {self.worst:.3f} px"
        if self.other:
            t += f", {len(self.other)} read by another path ({'; '.join(self.other[:3])})"
        return t


def compare_decode(x86: Path, arm: Path) -> int:
    a = {Path(r["source"]).name: r for r in _load(x86)}
    b = {Path(r["source"]).name: r for r in _load(arm)}
    diffs, codes, cmp = [], 0, Corners()
    if set(a) != set(b):
        diffs.append(f"images differ: {sorted(set(a) ^ set(b))}")
    for name in sorted(set(a) & set(b)):
        ra, rb = a[name], b[name]
        if "error" in ra or "error" in rb:
            diffs.append(f"{name}: error x86={ra.get('error')} arm64={rb.get('error')}")
            continue
        ca = sorted(ra["codes"], key=_key)
        cb = sorted(rb["codes"], key=_key)
        if [_key(c) for c in ca] != [_key(c) for c in cb]:
            diffs.append(f"{name}: payloads x86={[_key(c) for c in ca]} arm64={[_key(c) for c in cb]}")
            continue
        for p, q in zip(ca, cb):
            d = cmp.check(name, p, q)
            if d:
                diffs.append(d)
        codes += len(ca)
    print(f"{len(a)} images, {codes} codes, same payloads, {cmp.text()}"
          if not diffs else f"{len(diffs)} differences in {len(a)} images:")
    for d in diffs[:20]:
        print("  " + d)
    return 1 if diffs else 0


def compare_run(x86: Path, arm: Path) -> int:
    a, b = _load(x86), _load(arm)
    diffs, cmp = [], Corners()
    if len(a) != len(b):
        diffs.append(f"results: x86 {len(a)}, arm64 {len(b)}")
    shifted = []
    for p, q in zip(a, b):
        fields = ("id", "kind", "frame")
        # See SHIFT_FRAMES. The corners of a result from another frame are not compared (the
        # label has moved; a noread's are often cut by the edge of the view).
        if (p.get("kind") == q.get("kind") and p.get("id") == q.get("id") and _key(p) == _key(q)
                and p.get("frame") != q.get("frame") and abs(p["frame"] - q["frame"]) <= SHIFT_FRAMES):
            shifted.append(f"{p['kind']} id {p['id']} frame {p['frame']}/{q['frame']}")
            # its corners are those of another frame, often cut by the edge of the view: not compared
            q = {**q, "frame": p["frame"], "corners": p.get("corners"), "decoder": p.get("decoder"),
                 "stage": p.get("stage")}
        if any(p.get(k) != q.get(k) for k in fields) or _key(p) != _key(q):
            diffs.append("x86 " + json.dumps({k: p.get(k) for k in (*fields, "text")})
                         + " arm64 " + json.dumps({k: q.get(k) for k in (*fields, "text")}))
            continue
        d = cmp.check(f"id {p['id']}", p, q)
        if d:
            diffs.append(d)
    reads = sum(1 for r in a if r.get("kind") == "read")
    moved = f", {len(shifted)} results 1-{SHIFT_FRAMES} frames apart ({'; '.join(shifted[:3])})" if shifted else ""
    print(f"{len(a)} results ({reads} reads), same ids, kinds, payloads and frames, {cmp.text()}{moved}"
          if not diffs else f"{len(diffs)} differences in {len(a)} x86 / {len(b)} arm64 results:")
    for d in diffs[:20]:
        print("  " + d)
    return 1 if diffs else 0


def check_models(paths: list[Path]) -> int:
    """`edge-runtime models --test --json` of each runtime: the runtime asked for is the one
    loaded, and the active version passed its sha256 check and self-test."""
    seen, bad = [], []
    for path in paths:
        try:
            r = json.loads(path.read_text())
        except ValueError as exc:
            bad.append(f"{path.name}: not JSON ({exc})")
            continue
        active = [v for v in r.get("versions", []) if v.get("active")]
        st = (active[0].get("self_test") or {}) if active else {}
        if r.get("detector") != r.get("backend"):
            bad.append(f"{path.name}: asked for {r.get('detector')}, loaded {r.get('backend')}")
        elif not active or not active[0].get("ok") or not st.get("passed"):
            bad.append(f"{path.name}: {r.get('backend')}: active {r.get('active')} fallback {r.get('fallback')} "
                       f"self-test {st.get('result')}")
        else:
            seen.append(f"{r['backend']} {r['active']} ({st.get('result')})")
    print("; ".join(seen) if not bad else "; ".join(bad))
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "check-models":
        return check_models([Path(a) for a in argv[1:]])
    if len(argv) >= 2 and argv[0] == "requirements":
        print("\n".join(requirements(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "frames":
        frames(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "compare-decode":
        return compare_decode(Path(argv[1]), Path(argv[2]))
    if len(argv) == 3 and argv[0] == "compare-run":
        return compare_run(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
