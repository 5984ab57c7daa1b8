"""Model versions: a refused model (corrupt file, wrong hash, failed self-test) never runs; the
last good one does, and the log, the status and `edge-runtime models` say so.

Every test builds its own models dir from copies of the shipped files (the repo's models/ is
never touched): 1.0.0 = the shipped model, other versions = broken variants of it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from edge_runtime import detect
from edge_runtime.cli import main as cli_main
from edge_runtime.detect import DetectorUnavailable, selftest
from edge_runtime.detect import manifest as mf
from edge_runtime.detect.versions import list_versions
from edge_runtime.reader import Reader
from test_service import Running, make_config, wait_for

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models"
SHIPPED_MANIFEST = json.loads((SHIPPED / "manifest.json").read_text())
TFLITE = SHIPPED_MANIFEST["formats"]["tflite"]["model"]


def add_version(root: Path, version: str, how: str = "good") -> Path:
    """A copy of the shipped model as models/<version>/, damaged as `how` says."""
    d = root / version
    d.mkdir(parents=True)
    for p in SHIPPED.iterdir():
        if p.is_file():
            shutil.copy2(p, d / p.name)
    m = json.loads((d / "manifest.json").read_text())
    m["version"] = version
    if how == "truncated":  # a half-copied update: the manifest's hash is kept
        data = (d / TFLITE).read_bytes()
        (d / TFLITE).write_bytes(data[: len(data) // 2])
    elif how == "wrong_hash":  # the files are intact but the manifest belongs to another build
        m["files"][TFLITE]["sha256"] = "0" * 64
    elif how == "blind":  # loads, hash OK, but its decode thresholds let nothing through
        m["output"]["decode"]["score_threshold"] = 1.01
    else:
        assert how == "good", how
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    return d


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    add_version(root, "1.0.0")
    return root


def refused_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]


def test_versions_listed_newest_first_with_hash_checks(models):
    add_version(models, "1.1.0", "truncated")
    add_version(models, "1.10.0", "wrong_hash")
    vs = list_versions(models)
    assert [v.version for v in vs] == ["1.10.0", "1.1.0", "1.0.0"]  # numeric, not text order
    by = {v.version: v for v in vs}
    assert by["1.0.0"].ok and by["1.0.0"].error is None and all(by["1.0.0"].files.values())
    assert by["1.0.0"].hashes[TFLITE] == mf.sha256(SHIPPED / TFLITE)
    assert not by["1.1.0"].ok and by["1.1.0"].files[TFLITE] is False and "sha256 mismatch" in by["1.1.0"].error
    assert not by["1.10.0"].ok and "sha256 mismatch" in by["1.10.0"].error
    # the flat layout (what ships) is one version, named by its manifest
    shipped = SHIPPED_MANIFEST["version"]
    assert [(v.version, v.path, v.ok) for v in list_versions(SHIPPED)] == [(shipped, SHIPPED, True)]


def test_shipped_model_passes_its_self_test_with_both_backends():
    for backend in ("tflite", "ncnn"):
        det = detect.load(backend, model_dir=SHIPPED)
        selftest.self_test(det)  # raises if any sample code is missed
        assert selftest.count_found(det) == (5, 5)


@pytest.mark.parametrize("how,reason", [("truncated", "sha256 mismatch"), ("wrong_hash", "sha256 mismatch"),
                                        ("blind", "self-test failed: found 0 of 5 codes")])
def test_refused_version_falls_back_to_the_good_one_and_says_so(models, caplog, how, reason):
    add_version(models, "1.1.0", how)
    caplog.set_level(logging.INFO, logger="edge_runtime.detect")
    r = Reader(model="1.1.0", model_dir=models)  # the configured version is the bad one
    assert r.model_version == "1.0.0" and r.detector is not None
    assert r.detector.model_dir == models / "1.0.0"
    assert r.model_fallback.startswith("model 1.1.0 refused: ") and reason in r.model_fallback
    (line,) = refused_lines(caplog)
    assert line.startswith("model 1.1.0 refused: ") and reason in line and line.endswith("; using 1.0.0")
    assert "\n" not in line
    # "" (the newest that passes) skips it the same way
    caplog.clear()
    r = Reader(model_dir=models)
    assert r.model_version == "1.0.0" and reason in r.model_fallback and len(refused_lines(caplog)) == 1


def test_good_newer_version_is_chosen_without_fallback(models):
    add_version(models, "1.1.0")
    r = Reader(model_dir=models, detector="ncnn")
    assert r.model_version == "1.1.0" and r.model_fallback is None
    assert type(r.detector).__name__ == "NcnnDetector"
    assert Reader(model="1.0.0", model_dir=models).model_version == "1.0.0"


def test_unknown_version_is_refused_not_fatal(models):
    c = detect.choose("auto", model="9.9.9", model_dir=models)
    assert c.version == "1.0.0" and "model 9.9.9 refused: not in" in c.fallback


def test_running_model_is_kept_when_the_new_one_is_refused(models, caplog):
    running = detect.choose("tflite", model_dir=models)
    assert running.version == "1.0.0"
    add_version(models, "1.1.0", "blind")
    # even if the running version's files were damaged since: it was tested and is in memory
    (models / "1.0.0" / TFLITE).write_bytes(b"garbage")
    caplog.set_level(logging.WARNING, logger="edge_runtime.detect")
    c = detect.choose("tflite", model="1.1.0", keep=running.detector, model_dir=models)
    assert c.detector is running.detector and c.version == "1.0.0" and "self-test failed" in c.fallback
    assert refused_lines(caplog)[0].endswith("; keeping 1.0.0")


def test_nothing_passes(models):
    (models / "1.0.0" / TFLITE).write_bytes(b"garbage")
    with pytest.raises(DetectorUnavailable, match="model 1.0.0 refused: .*sha256 mismatch"):
        detect.choose("tflite", model_dir=models)
    c = detect.choose("auto", model_dir=models)  # auto: whole-frame reading, and why
    assert c.detector is None and c.version is None and "sha256 mismatch" in c.fallback


def test_service_reload_keeps_the_good_model_and_reports_it(tmp_path, models, monkeypatch, caplog):
    monkeypatch.setenv(mf.ENV, str(models))
    path = make_config(tmp_path, source={"realtime": True})
    good = path.read_text()
    with Running(path) as run:
        svc = run.service
        assert svc.status()["model"] == "1.0.0" and svc.status()["model_fallback"] is None
        first = svc.reader.detector
        # a new version dropped in, config unchanged (SIGHUP): broken -> refused, the running one kept
        add_version(models, "1.1.0", "truncated")
        caplog.set_level(logging.WARNING, logger="edge_runtime.detect")
        assert svc.reload() is True
        st = svc.status()
        assert st["model"] == "1.0.0" and "model 1.1.0 refused" in st["model_fallback"]
        assert svc.reader.detector is first
        assert any(line.endswith("keeping 1.0.0") for line in refused_lines(caplog))
        # the config names a version that fails its self-test: same
        add_version(models, "1.2.0", "blind")
        path.write_text(good.replace("[source]", '[reader]\nmodel = "1.2.0"\n[source]'))
        assert svc.reload() is True
        st = svc.status()
        assert svc.config["reader"]["model"] == "1.2.0"
        assert st["model"] == "1.0.0" and "self-test failed" in st["model_fallback"]
        assert svc.reader.detector is first
        # a good version named: it is loaded and the fallback clears
        add_version(models, "1.3.0")
        path.write_text(good.replace("[source]", '[reader]\nmodel = "1.3.0"\n[source]'))
        assert svc.reload() is True
        st = svc.status()
        assert st["model"] == "1.3.0" and st["model_fallback"] is None and svc.reader.detector is not first
        n = svc.stats.reads
        wait_for(lambda: svc.stats.reads > n, what="reads with the new model")


def test_reload_with_another_backend_or_thread_count_loads_it(tmp_path, models, monkeypatch):
    """The running detector is kept on reload only if it is what the new config asks for: a
    change of `detector` or `detector_threads` alone (same model version) must take effect."""
    monkeypatch.setenv(mf.ENV, str(models))
    path = make_config(tmp_path, source={"realtime": True})
    good = path.read_text()
    with Running(path) as run:
        svc = run.service
        assert svc.status()["detector_backend"] in ("tflite", "ncnn") and svc.reader.detector.threads == 1
        for backend in ("tflite", "ncnn"):
            path.write_text(good.replace("[source]", f'[reader]\ndetector = "{backend}"\n[source]'))
            assert svc.reload() is True
            assert svc.status()["detector_backend"] == backend and svc.status()["model"] == "1.0.0"
        path.write_text(good.replace("[source]", '[reader]\ndetector = "ncnn"\ndetector_threads = 2\n[source]'))
        assert svc.reload() is True
        assert svc.reader.detector.threads == 2 and svc.status()["detector_backend"] == "ncnn"
        assert svc.reader.detector.net.opt.num_threads == 2  # what the ncnn runtime itself was given
        n = svc.stats.reads
        wait_for(lambda: svc.stats.reads > n, what="reads after the reload")


def test_models_command_lists_versions_hashes_and_active(models, tmp_path, capsys):
    add_version(models, "1.1.0", "truncated")
    add_version(models, "1.2.0", "blind")
    assert cli_main(["models", "--dir", str(models)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "active: 1.0.0" in out and "fallback: model 1.2.0 refused" in out
    assert re.search(r"\[detector auto -> (tflite|ncnn), ", out)  # which runtime auto chose, timed here
    rows = [m.groups() for ln in lines if (m := re.match(r"([* ]) (\S+)\s+(OK|MISMATCH|BROKEN)\s+(\S+)$", ln))]
    assert rows == [(" ", "1.2.0", "OK", str(models / "1.2.0")), (" ", "1.1.0", "MISMATCH", str(models / "1.1.0")),
                    ("*", "1.0.0", "OK", str(models / "1.0.0"))]
    sha = mf.sha256(SHIPPED / TFLITE)
    assert any(TFLITE in ln and sha in ln and ln.rstrip().endswith("OK") for ln in lines)
    assert any(TFLITE in ln and sha not in ln and ln.rstrip().endswith("MISMATCH") for ln in lines)

    cfg = make_config(tmp_path, extra="")
    cfg.write_text(cfg.read_text().replace("[source]", '[reader]\nmodel = "1.2.0"\n[source]'))
    assert cli_main(["models", "--dir", str(models), "--config", str(cfg), "--json", "--test"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "1.2.0" and doc["active"] == "1.0.0" and "self-test failed" in doc["fallback"]
    assert doc["detector"] == "auto" and doc["backend"] in ("tflite", "ncnn")
    by = {v["version"]: v for v in doc["versions"]}
    assert list(by) == ["1.2.0", "1.1.0", "1.0.0"]
    assert by["1.0.0"]["active"] and by["1.0.0"]["self_test"]["passed"]
    assert not by["1.2.0"]["self_test"]["passed"] and "found 0 of 5" in by["1.2.0"]["self_test"]["result"]
    assert by["1.1.0"]["files"][TFLITE]["ok"] is False and by["1.1.0"]["files"][TFLITE]["manifest_sha256"] == sha

    assert cli_main(["models", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: models dir not found" in capsys.readouterr().err
