#!/usr/bin/env python3
"""Make a labelled set of photo-like QR images with tools the project never trains or tunes on.

No real camera photos can be fetched on the build machines, so this is the stand-in for
"a new user's own photos": codes drawn by the `qrcode` package (not segno, which the bench
and the model use), placed in colour scenes with perspective, lens vignetting, uneven
light, defocus, hand shake, sensor noise and phone-style JPEG, at phone resolutions.
Usage: make_foreign_photos.py OUT_DIR [--count N] [--seed S]  -> OUT_DIR/*.jpg + labels.json
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import cv2
import numpy as np
import qrcode
from qrcode.constants import ERROR_CORRECT_H, ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q


def payload(rng) -> str:
    kind = rng.integers(4)
    if kind == 0:
        return "https://example.org/p/" + "".join(rng.choice(list(string.ascii_letters + string.digits), int(rng.integers(6, 40))))
    if kind == 1:
        return f"(01){rng.integers(10**13, 10**14)}(10)B{rng.integers(1000, 9999)}(17)2{rng.integers(10000, 99999)}"
    if kind == 2:
        return "WIFI:S:plant-" + str(rng.integers(100)) + ";T:WPA;P:" + "".join(rng.choice(list(string.ascii_letters), 12)) + ";;"
    return "SN " + " ".join(str(rng.integers(10**5, 10**6)) for _ in range(int(rng.integers(1, 6))))


def scene(rng, h, w) -> np.ndarray:
    small = rng.integers(40, 220, (6, 8, 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 12))):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.rectangle(img, p1, p2, color, -1 if rng.random() < 0.5 else int(rng.integers(2, 20)))
    for _ in range(int(rng.integers(0, 5))):
        cv2.putText(img, "".join(rng.choice(list(string.ascii_uppercase), 8)), (int(rng.integers(0, w - 200)), int(rng.integers(40, h))),
                    cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(1, 4)), tuple(int(c) for c in rng.integers(0, 255, 3)), int(rng.integers(1, 6)))
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def make(rng, h=1200, w=1600):
    text = payload(rng)
    ec = [ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q, ERROR_CORRECT_H][int(rng.integers(4))]
    q = qrcode.QRCode(error_correction=ec, box_size=10, border=4)
    q.add_data(text)
    q.make(fit=True)
    code = np.array(q.make_image(fill_color="black", back_color="white").convert("RGB"))[:, :, ::-1]
    img = scene(rng, h, w)
    side = float(rng.uniform(0.07, 0.45)) * min(h, w)
    cx, cy = rng.uniform(side * 0.7, w - side * 0.7), rng.uniform(side * 0.7, h - side * 0.7)
    ang = rng.uniform(0, 2 * np.pi)
    pts = []
    for k in range(4):
        a = ang + k * np.pi / 2 + np.pi / 4
        r = side / np.sqrt(2) * rng.uniform(0.85, 1.15)  # perspective: corners at uneven radii
        pts.append([cx + r * np.cos(a), cy + r * np.sin(a)])
    ch, cw = code.shape[:2]
    hm = cv2.getPerspectiveTransform(np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]]), np.float32(pts))
    warped = cv2.warpPerspective(code, hm, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((ch, cw), 255, np.uint8), hm, (w, h))
    img[mask > 128] = warped[mask > 128]
    f = img.astype(np.float32) / 255.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.0 - float(rng.uniform(0, 0.5)) * ((xx - w * rng.uniform(0, 1)) ** 2 + (yy - h * rng.uniform(0, 1)) ** 2) / (w * w + h * h)
    tint = rng.uniform(0.75, 1.1, 3).astype(np.float32)
    f = f * light[..., None] * tint * float(rng.uniform(0.35, 1.1))
    if rng.random() < 0.3:  # a specular highlight from an overhead lamp on a glossy label
        gx, gy, gs = cx + rng.uniform(-0.4, 0.4) * side, cy + rng.uniform(-0.4, 0.4) * side, rng.uniform(0.05, 0.2) * side
        f = f + float(rng.uniform(0.3, 0.9)) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * gs * gs))[..., None]
    f = np.clip(f, 0, 1) ** float(rng.uniform(0.8, 1.4))
    img = (f * 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 3.5)))
    if rng.random() < 0.3:
        n = int(rng.integers(3, 18))
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1.0 / n
        rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1)
        img = cv2.filter2D(img, -1, cv2.warpAffine(k, rot, (n, n)))
    img = np.clip(img.astype(np.float32) + rng.normal(0, rng.uniform(1, 6), img.shape), 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 92))])
    return jpg.tobytes(), text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    labels = {}
    for i in range(a.count):
        data, text = make(rng)
        name = f"photo{i:04d}.jpg"
        (out / name).write_bytes(data)
        labels[name] = [text]
    (out / "labels.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
