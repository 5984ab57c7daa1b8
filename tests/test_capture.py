"""Frame sources against real files, real (missing) devices and a real refused TCP port."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_runtime.capture import KINDS, check_options, open_source, source_class, spec
from edge_runtime.capture.base import LiveCapture, SourceError, SourceTimeout
from edge_runtime.capture.camera import CameraSource
from edge_runtime.capture.folder import natural_key

HANG = 15.0  # a call that takes longer than this is hung, not slow


def wait_for(pred, timeout: float = 20.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met within %.0f s" % timeout)


def drain(src, limit: int = 1000) -> list:
    frames = []
    for _ in range(limit):
        f = src.read(timeout=5.0)
        if f is None:
            return frames
        frames.append(f)
    raise AssertionError("source did not finish")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- registry --------------------------------------------------------------------------------


def test_every_kind_has_a_consistent_spec():
    for kind in KINDS:
        defaults, keys, required, types = spec(kind)
        assert keys == set(defaults) == set(types), kind
        assert required <= keys, kind
        for key, value in defaults.items():
            assert isinstance(value, types[key]), (kind, key)
        assert source_class(kind).kind == kind


def test_options_are_checked_with_one_line_naming_the_key():
    with pytest.raises(SourceError, match="unknown key 'fsp'"):
        check_options("folder", {"path": "x", "fsp": 3})
    with pytest.raises(SourceError, match="missing required key 'path'"):
        check_options("video", {})
    with pytest.raises(SourceError, match=r"loop = 'yes': must be bool"):
        check_options("folder", {"path": "x", "loop": "yes"})
    with pytest.raises(SourceError, match=r"width = True: must be int"):
        check_options("synthetic", {"width": True})
    with pytest.raises(SourceError, match="unknown source kind 'webcam'"):
        open_source({"kind": "webcam"})
    assert check_options("camera", {"device": "/dev/video2"})["device"] == "/dev/video2"
    assert check_options("camera", {})["exposure"] is None


# -- folder ----------------------------------------------------------------------------------


def write_png(path: Path, width: int, value: int = 128) -> None:
    Image.fromarray(np.full((8, width), value, np.uint8)).save(path)


def test_natural_key_orders_numbers_as_numbers():
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img2b.png", "img10.png"]


def test_folder_reads_images_in_natural_order_then_finishes(tmp_path):
    # The width of each image tells which file a frame came from.
    for n in (10, 2, 1, 33):
        write_png(tmp_path / f"img{n}.png", width=n + 8)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source({"kind": "folder", "path": str(tmp_path)})
    frames = drain(src)
    assert [f.image.shape[1] - 8 for f in frames] == [1, 2, 10, 33]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert all(f.image.dtype == np.uint8 and f.truths is None for f in frames)
    assert src.state()["state"] == "finished"
    assert src.read() is None


def test_folder_loop_and_pattern(tmp_path):
    for n in (1, 2, 3):
        write_png(tmp_path / f"a{n}.png", width=n + 8)
    write_png(tmp_path / "b9.png", width=99)
    src = open_source({"kind": "folder", "path": str(tmp_path), "loop": True, "pattern": "a*"})
    frames = [src.read() for _ in range(7)]
    assert [f.image.shape[1] - 8 for f in frames] == [1, 2, 3, 1, 2, 3, 1]
    assert [f.index for f in frames] == list(range(7))
    src.close()
    assert src.read() is None


def test_folder_honours_exif_orientation(tmp_path):
    # Stored 40 wide x 20 high, left half black; Orientation=6 says "rotate 90 deg clockwise
    # to display", so the upright image is 20 wide x 40 high with the black half on top.
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:, :20] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    img = open_source({"kind": "folder", "path": str(tmp_path)}).read().image
    assert img.shape == (40, 20, 3)
    assert img[:20].mean() < 60 and img[20:].mean() > 200


def test_folder_gives_bgr_and_flattens_transparency(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "1.png")
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent: must become white paper
    Image.fromarray(rgba, "RGBA").save(tmp_path / "2.png")
    src = open_source({"kind": "folder", "path": str(tmp_path)})
    red, clear = src.read().image, src.read().image
    assert red[0, 0].tolist() == [0, 0, 255]
    assert clear[0, 0].tolist() == [255, 255, 255]


def test_folder_skips_an_unreadable_image_with_one_log_line(tmp_path, caplog):
    write_png(tmp_path / "1.png", width=9)
    (tmp_path / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not a png")
    write_png(tmp_path / "3.png", width=11)
    caplog.set_level(logging.WARNING)
    src = open_source({"kind": "folder", "path": str(tmp_path), "loop": True})
    frames = [src.read() for _ in range(4)]  # two passes over the folder
    assert [f.image.shape[1] for f in frames] == [9, 11, 9, 11]
    lines = [r.getMessage() for r in caplog.records if "2.png" in r.getMessage()]
    assert len(lines) == 1 and "skipping image" in lines[0] and "\n" not in lines[0]
    assert src.state()["skipped"] == 1


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which carries almost no pixel data: if
    the loader decoded before checking the size, it would fail with a decode error instead."""
    raw = bytearray()
    raw += b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw += struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    raw += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    raw += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return bytes(raw)


def test_folder_refuses_oversized_images_from_their_header(tmp_path, caplog):
    (tmp_path / "1_big.png").write_bytes(png_claiming(8000, 6000))  # 48 MP: above our 40 MP
    (tmp_path / "2_bomb.png").write_bytes(png_claiming(50_000, 50_000))  # above Pillow's own limit too
    write_png(tmp_path / "3_small.png", width=12)
    caplog.set_level(logging.WARNING)
    src = open_source({"kind": "folder", "path": str(tmp_path)})
    assert src.read().image.shape[1] == 12
    assert src.read() is None
    (big,) = [r.getMessage() for r in caplog.records if "1_big.png" in r.getMessage()]
    assert "8000x6000 = 48,000,000 pixels, above the limit of 40,000,000" in big and "raise max_pixels" in big
    (bomb,) = [r.getMessage() for r in caplog.records if "2_bomb.png" in r.getMessage()]
    assert "50000x50000 = 2,500,000,000 pixels, above the limit of 40,000,000" in bomb
    # The limit is the option's: a lower one refuses the small image too.
    src = open_source({"kind": "folder", "path": str(tmp_path), "max_pixels": 50})
    assert src.read() is None


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(SourceError, match=rf"folder {tmp_path} has no images \(png, jpg"):
        open_source({"kind": "folder", "path": str(tmp_path)})
    missing = tmp_path / "nope"
    with pytest.raises(SourceError, match=rf"folder {missing} does not exist"):
        open_source({"kind": "folder", "path": str(missing)})
    write_png(tmp_path / "x.png", width=9)
    with pytest.raises(SourceError, match="not a directory"):
        open_source({"kind": "folder", "path": str(tmp_path / "x.png")})


def test_folder_where_every_image_is_bad_finishes_instead_of_spinning(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    src = open_source({"kind": "folder", "path": str(tmp_path), "loop": True})
    assert src.read() is None
    assert "no readable image" in src.state()["last_error"]


def test_paced_source_keeps_the_read_timeout(tmp_path):
    write_png(tmp_path / "1.png", width=9)
    write_png(tmp_path / "2.png", width=10)
    src = open_source({"kind": "folder", "path": str(tmp_path), "fps": 0.1})  # one frame per 10 s
    assert src.read(timeout=0.05).image.shape[1] == 9
    t = time.monotonic()
    with pytest.raises(SourceTimeout):
        src.read(timeout=0.05)
    assert time.monotonic() - t < HANG


# -- video -----------------------------------------------------------------------------------


def write_video(path: Path, n: int, fps: float = 25.0) -> None:
    """Frame i is flat gray 20*i + 10, so a read frame tells its position in the file."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((48, 64, 3), 20 * i + 10, np.uint8))
    w.release()


def levels(frames) -> list[int]:
    return [round((float(f.image.mean()) - 10) / 20) for f in frames]


def test_video_reads_to_the_end(tmp_path):
    path = tmp_path / "line.avi"
    write_video(path, 6)
    src = open_source({"kind": "video", "path": str(path)})
    frames = drain(src)
    assert levels(frames) == [0, 1, 2, 3, 4, 5]
    assert [f.index for f in frames] == list(range(6))
    assert frames[0].image.shape == (48, 64, 3)
    assert src.state()["state"] == "finished"


def test_video_loops(tmp_path):
    path = tmp_path / "line.avi"
    write_video(path, 4)
    src = open_source({"kind": "video", "path": str(path), "loop": True})
    frames = [src.read() for _ in range(10)]
    assert levels(frames) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [f.index for f in frames] == list(range(10))
    assert src.state()["loops"] == 2
    src.close()
    assert src.state()["state"] == "closed"


def test_video_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(SourceError, match=f"video {missing} does not exist"):
        open_source({"kind": "video", "path": str(missing)})
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match=f"video {junk}"):
        open_source({"kind": "video", "path": str(junk)})


# -- camera ----------------------------------------------------------------------------------


def unused_video_device() -> str:
    n = 0
    while os.path.exists(f"/dev/video{n}"):
        n += 1
    return f"/dev/video{n}"


def test_camera_that_does_not_exist_fails_at_open_with_one_line():
    dev = unused_video_device()
    t = time.monotonic()
    with pytest.raises(SourceError, match=f"camera {dev} does not exist") as exc:
        open_source({"kind": "camera", "device": int(dev.removeprefix("/dev/video"))})
    assert "\n" not in str(exc.value)
    assert time.monotonic() - t < HANG


def test_camera_path_that_is_not_a_camera_fails_at_open(tmp_path):
    fake = tmp_path / "video0"
    fake.write_bytes(b"")
    with pytest.raises(SourceError, match=f"cannot open camera {fake}"):
        open_source({"kind": "camera", "device": str(fake)})


def test_camera_gone_while_running_reopens_and_read_keeps_its_timeout(caplog):
    """Once running, a camera whose node disappeared is retried in the background: the
    source says "reopening", read() raises SourceTimeout within its timeout, close() is quick."""
    caplog.set_level(logging.WARNING)
    cam = CameraSource({"device": unused_video_device()})
    LiveCapture.open(cam)  # the run-time path (open() itself refuses a missing device)
    try:
        wait_for(lambda: cam.state()["attempts"] >= 2)
        st = cam.state()
        assert st["state"] == "reopening" and "is gone" in st["last_error"]
        t = time.monotonic()
        with pytest.raises(SourceTimeout, match="reopening"):
            cam.read(timeout=0.2)
        assert time.monotonic() - t < HANG
    finally:
        cam.close()
    assert cam.state()["state"] == "closed"
    assert cam.read() is None
    assert len([r for r in caplog.records if "is gone" in r.getMessage()]) == 1  # not one per attempt


# -- rtsp / gstreamer ------------------------------------------------------------------------


def test_rtsp_unreachable_is_reopening_not_an_error_and_never_hangs(caplog):
    caplog.set_level(logging.WARNING)
    url = f"rtsp://op:secret@127.0.0.1:{free_port()}/stream1"
    t = time.monotonic()
    src = open_source({"kind": "rtsp", "url": url, "timeout_s": 2.0})
    try:
        assert time.monotonic() - t < HANG
        wait_for(lambda: src.state()["attempts"] >= 3)
        st = src.state()
        assert st["state"] == "reopening" and st["frames"] == 0 and "cannot connect" in st["last_error"]
        t = time.monotonic()
        with pytest.raises(SourceTimeout):
            src.read(timeout=0.2)
        assert time.monotonic() - t < HANG
    finally:
        t = time.monotonic()
        src.close()
        assert time.monotonic() - t < HANG
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("edge_runtime.capture")]
    assert len(lines) == 1 and "retrying with backoff" in lines[0]
    assert "secret" not in lines[0] and "op:***@127.0.0.1" in lines[0]


def test_live_stream_reopens_after_the_stream_ends(tmp_path, caplog):
    """A real FFmpeg capture (a file given as the stream URL) that ends is reopened: frames
    keep coming with increasing index, reopens is counted; when the stream is gone for good
    the source stays "reopening" until closed."""
    caplog.set_level(logging.WARNING)
    path = tmp_path / "cam.avi"
    write_video(path, 5)
    src = open_source({"kind": "rtsp", "url": str(path)})
    try:
        seen = []

        def after_reopen():
            try:
                seen.append(src.read(timeout=0.5))
            except SourceTimeout:
                pass
            return src.state()["reopens"] >= 1 and seen and seen[-1].index >= 5

        wait_for(after_reopen)
        assert [f.index for f in seen] == sorted({f.index for f in seen})
        assert src.state()["state"] in ("open", "reopening")
        path.unlink()
        wait_for(lambda: src.state()["state"] == "reopening" and src.state()["attempts"] >= 1)
    finally:
        src.close()
    assert any("read failed" in r.getMessage() and "reopening" in r.getMessage() for r in caplog.records)
    assert any("open (after" in r.getMessage() for r in caplog.records)


def test_rtsp_and_gstreamer_need_their_key():
    with pytest.raises(SourceError, match="missing required key 'url'"):
        open_source({"kind": "rtsp"})
    with pytest.raises(SourceError, match="must end in appsink"):
        open_source({"kind": "gstreamer", "pipeline": "videotestsrc ! fakesink"})


def test_gstreamer_without_support_in_opencv_says_so():
    from edge_runtime.capture.stream import gstreamer_available

    if gstreamer_available():  # this build could run it: check it does not claim otherwise
        src = open_source({"kind": "gstreamer", "pipeline": "videotestsrc num-buffers=3 ! videoconvert ! appsink"})
        src.close()
        return
    with pytest.raises(SourceError, match="this OpenCV build has no GStreamer support"):
        open_source({"kind": "gstreamer", "pipeline": "videotestsrc ! videoconvert ! appsink"})


# -- synthetic -------------------------------------------------------------------------------

SMALL = {"kind": "synthetic", "width": 320, "height": 240, "realtime": False}


def test_synthetic_is_deterministic_and_carries_truths():
    a = open_source({**SMALL, "seed": 3, "frames": 8})
    b = open_source({**SMALL, "seed": 3, "frames": 8})
    fa, fb = drain(a), drain(b)
    assert len(fa) == len(fb) == 8
    for x, y in zip(fa, fb):
        assert np.array_equal(x.image, y.image)
        assert x.truths == y.truths
    assert fa[0].image.shape[:2] == (240, 320) and fa[0].image.dtype == np.uint8
    truths = [t for f in fa for t in f.truths]
    assert truths, "8 frames at 2 labels/s should show at least one label"
    assert all(isinstance(t["payload"], bytes) and len(t["corners"]) == 4 for t in truths)
    c = drain(open_source({**SMALL, "seed": 4, "frames": 8}))
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(fa, c))


def test_synthetic_frames_n_finishes():
    src = open_source({**SMALL, "frames": 3})
    frames = drain(src)
    assert [f.index for f in frames] == [0, 1, 2]
    assert src.state() == {"state": "finished", "frames": 3, "reopens": 0, "last_error": None}


def test_synthetic_stall_after_times_out_forever():
    src = open_source({**SMALL, "stall_after": 2})
    assert [src.read(timeout=1.0).index for _ in range(2)] == [0, 1]
    for _ in range(2):
        t = time.monotonic()
        with pytest.raises(SourceTimeout, match="stall_after"):
            src.read(timeout=0.1)
        assert time.monotonic() - t < HANG
    assert src.state()["state"] == "open" and src.state()["frames"] == 2


def test_synthetic_realtime_blocks_no_longer_than_the_timeout():
    src = open_source({**SMALL, "realtime": True, "fps": 0.1})
    src.read(timeout=1.0)
    with pytest.raises(SourceTimeout):
        src.read(timeout=0.05)


def test_close_from_another_thread_does_not_deadlock(tmp_path):
    src = open_source({"kind": "rtsp", "url": f"rtsp://127.0.0.1:{free_port()}/x"})
    t = threading.Thread(target=src.close)
    t.start()
    t.join(HANG)
    assert not t.is_alive()


def test_synthetic_is_the_default_kind_and_rejects_bad_ranges():
    src = open_source({"width": 320, "height": 240, "realtime": False, "frames": 1})
    assert src.kind == "synthetic" and src.read().image.shape == (240, 320, 3)
    with pytest.raises(SourceError, match="synthetic source: .*speed_px_s"):
        open_source({**SMALL, "speed_px_s": -5.0})
    with pytest.raises(SourceError, match="stall_after=-1"):
        open_source({**SMALL, "stall_after": -1})
