"""From a code's four corners in a gray frame to candidate module grids with erasures.

The grid decoder (`qr_grid.decode_grid`) can correct twice as many damaged codewords when
it knows which ones are damaged. This module samples the grid *and* says which modules
it does not trust, from image evidence only:

  * no local contrast: a uniform blot (label, paint, dirt) or a flat shadow wipes out the
    texture a QR code always has within a couple of modules;
  * saturated glare (~255) where the code's own light modules are darker;
  * the sampled value is close to the threshold (half-covered module, smear).

API::

    sample_grid(gray, quad) -> list[GridSample]   # GridSample(modules, erasures, version, corners)

`gray`: uint8 2-D frame (or crop); `quad`: the code's four outer corners (x, y) in
`gray`'s coordinates, clockwise, starting anywhere (the corner with no finder pattern is
found and becomes bottom-right); a few pixels off is fine. `modules` is a bool grid (True =
dark) of size 4v+17, `erasures` a float grid (0 = trusted, larger = less trusted, as
`decode_grid` ranks them), `corners` the quad reordered to start at the code's top-left.
Candidates come best first (most likely version first); an empty list means no finder
structure was found. Pure function; ~1–2 ms for a 60-module code on one x86 core.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np

from edge_runtime.decode import qr_tables as T


class GridSample(NamedTuple):
    modules: np.ndarray
    erasures: np.ndarray
    version: int
    corners: list[tuple[float, float]]


def _runs(line: np.ndarray) -> list[tuple[bool, int]]:
    edges = np.flatnonzero(np.diff(line.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [len(line)]))
    return [(bool(line[a]), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def _finder_pitch(dark: np.ndarray, m: int) -> float | None:
    """Module pitch if a finder pattern sits at the top-left corner of `dark` (the code
    starting at about (m, m)): the diagonal through a finder crosses dark/light/dark/light/
    dark in the ratio 1:1:3:1:1, whatever the scale; None if it does not."""
    pitches = []
    n = dark.shape[0]
    for off in (-2, 0, 2):
        k = np.arange(max(0, m - 4), n // 2)
        rr, cc = k, np.clip(k + off, 0, n - 1)
        runs = _runs(dark[rr, cc])
        # Skip the quiet zone (light) the corner may be off into.
        while runs and not runs[0][0]:
            runs = runs[1:]
        if len(runs) < 5:
            continue
        a, b, c, d, e = (r[1] for r in runs[:5])
        unit = (a + b + c + d + e) / 7.0
        # The first run is cut short when the corner estimate lies inside the code.
        if all(0.4 * unit <= x <= 1.8 * unit for x in (b, d, e)) and 2.0 * unit <= c <= 4.2 * unit and a <= 1.8 * unit:
            # One diagonal step crosses one pixel row and column: runs count in pitch units.
            pitches.append((b + c + d + e + max(a, unit * 0.9)) / 7.0)
    if not pitches:
        return None
    p = float(np.median(pitches))
    # Below ~1.5 px per module the pattern is as likely pixel noise as a finder, and such a
    # code could not be sampled anyway.
    return p if p >= 1.5 else None


def _finder_template(p: float, modules: int) -> np.ndarray:
    """A finder (7x7 in a light ring, modules=9) or alignment (5x5 in a light ring, modules=7)
    pattern at pitch p, dark = 0."""
    k = modules
    c = k // 2
    yy, xx = np.mgrid[0:k, 0:k]
    ring = np.maximum(abs(yy - c), abs(xx - c))
    if k == 9:
        dark = (ring == 3) | (ring <= 1)
    else:
        dark = (ring == 2) | (ring == 0)
    img = np.where(dark, 0, 255).astype(np.uint8)
    size = max(k, int(round(k * p)))
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _refine(img: np.ndarray, centre: tuple[float, float], tmpl: np.ndarray, radius: float) -> tuple[tuple[float, float], float]:
    """Best match of `tmpl` centred within `radius` px of `centre`: (centre, score)."""
    th, tw = tmpl.shape
    r = int(np.ceil(radius))
    x0 = int(round(centre[0] - tw / 2)) - r
    y0 = int(round(centre[1] - th / 2)) - r
    h, w = img.shape
    if x0 < 0 or y0 < 0 or x0 + tw + 2 * r > w or y0 + th + 2 * r > h:
        return centre, 0.0
    win = img[y0 : y0 + th + 2 * r, x0 : x0 + tw + 2 * r]
    res = cv2.matchTemplate(win, tmpl, cv2.TM_CCOEFF_NORMED)
    _, score, _, loc = cv2.minMaxLoc(res)
    return (x0 + loc[0] + tw / 2.0, y0 + loc[1] + th / 2.0), float(score)


def _otsu(values: np.ndarray) -> tuple[float, float, float]:
    """(threshold, dark mean, light mean) of sampled values (0..255)."""
    vals = values.ravel()
    v = vals.astype(np.uint8).reshape(1, -1)  # values come from uint8 images: no clipping needed
    thr, _ = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    lo = vals[vals <= thr]
    hi = vals[vals > thr]
    dark = float(lo.mean()) if lo.size else 0.0
    light = float(hi.mean()) if hi.size else 255.0
    # Otsu's criterion is flat between two well-separated modes and OpenCV returns the
    # lowest such value, right at the edge of the dark mode: use the midpoint instead.
    return (dark + light) / 2.0, dark, light


def _sample(rect: np.ndarray, std: np.ndarray, smooth: np.ndarray, version: int, L: int, m: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n = T.size(version)
    p = L / n
    tl = (m + 3.5 * p, m + 3.5 * p)
    tr = (m + (n - 3.5) * p, m + 3.5 * p)
    bl = (m + 3.5 * p, m + (n - 3.5) * p)
    finder = _finder_template(p, 9)
    got = []
    seen = 0
    for c in (tl, tr, bl):
        pos, score = _refine(rect, c, finder, max(3.0, 0.8 * p))
        got.append(pos if score > 0.5 else c)
        seen += score > 0.5
    if seen < 2:
        return []  # not a QR code at this size: spare the decoder a garbage grid
    src = [(3.5, 3.5), (n - 3.5, 3.5), (3.5, n - 3.5)]
    dst = list(got)
    if version >= 2:
        # The bottom-right alignment pattern pins down perspective the corners only guess.
        a = n - 6.5
        # Predict it from the refined finders (affine) before searching around it.
        A = cv2.getAffineTransform(np.float32(src), np.float32(dst))
        pred = A @ np.array([a, a, 1.0])
        pos, score = _refine(rect, (float(pred[0]), float(pred[1])), _finder_template(p, 7), max(3.0, 1.5 * p))
        if score > 0.5:
            src.append((a, a))
            dst.append(pos)
        else:
            # No alignment pattern seen (blot, blur): fall back to the quad's corner.
            src.append((n, n))
            dst.append((m + L, m + L))
    else:
        src.append((n, n))
        dst.append((m + L, m + L))
    H = cv2.getPerspectiveTransform(np.float32(src), np.float32(dst))
    g = np.arange(n, dtype=np.float32) + 0.5
    gx, gy = np.meshgrid(g, g)
    pts = cv2.perspectiveTransform(np.stack([gx, gy], -1).reshape(-1, 1, 2), H).reshape(n, n, 2)
    mx, my = pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32)
    vals = cv2.remap(smooth, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    peak = cv2.remap(rect, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    sd = cv2.remap(std, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    thr, dark_lvl, light_lvl = _otsu(vals)
    contrast = light_lvl - dark_lvl
    if contrast < 20:
        return []
    modules = vals < thr
    # Uniform: no texture within ~2 modules. A real code rarely has a 3x3 block of one colour;
    # when it has, erasing it costs one EC codeword, never a wrong read.
    uniform = sd < 0.12 * contrast
    # Blots: only uniform regions of some size (a stray 3x3 patch of one colour is data).
    nlab, lab, stats, _ = cv2.connectedComponentsWithStats(uniform.astype(np.uint8), connectivity=8)
    big = np.zeros_like(uniform)
    for i in range(1, nlab):
        if stats[i, cv2.CC_STAT_AREA] >= 3:
            big |= lab == i
    ring = cv2.dilate(big.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~big
    weight = np.zeros((n, n), np.float32)
    weight[uniform] = 0.6
    weight[big] = 1.0
    weight[ring] = np.maximum(weight[ring], 0.5)  # blot edge: half-covered modules
    if light_lvl < 235:
        weight[peak >= 250] = 1.0  # glare brighter than any light module
    near = np.abs(vals - thr) < 0.15 * contrast
    weight[near] = np.maximum(weight[near], 0.4)
    glared = _under_glare(vals, modules, weight, dark_lvl, light_lvl)
    return [glared, (modules, weight)] if glared is not None else [(modules, weight)]


def _lin(v: np.ndarray | float) -> np.ndarray:
    """Sensor values (0..255, gamma-encoded) to light, where a glare's light adds up."""
    return (np.clip(v, 0, 255) / 255.0) ** 2.2


def _under_glare(vals: np.ndarray, modules: np.ndarray, weight: np.ndarray, dark_lvl: float,
                 light_lvl: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The grid read again under a specular highlight; None when there is none.

    A highlight adds light G(x), smooth across the code: an ink module reads ink + G and a
    paper module min(1, paper + G) (the sensor clips). One global threshold calls the halo's
    ink (G of 0.3-0.9: gray 150-250) paper: 15-25 wrong modules, more than a small code's
    EC. Here G is estimated from the modules themselves (ink: value - ink, paper: value -
    paper, G >= 0 so a "paper" darker than paper is ink; an upper envelope because a missed
    ink module only ever lowers the estimate), each module is cut half-way between its own
    paper and ink level, and modules whose two levels are too close (the clipped core) are
    erased. Measured on the conveyor's glared labels with their true corners: 87 of 90
    decode (GridDecoder), against 57 with the global threshold.
    """
    sat = vals >= 250
    if int((sat & (vals >= light_lvl + 6)).sum()) < 3:
        return None
    L = _lin(vals)
    ink, paper = float(_lin(dark_lvl)), float(_lin(light_lvl))
    dark = modules | (L < paper - 0.06)
    box = np.ones((3, 3), np.uint8)
    for _ in range(4):
        g = np.maximum(np.where(dark, L - ink, L - paper), 0).astype(np.float32)
        trusted = np.where(sat & ~dark, 0.0, 1.0).astype(np.float32)  # clipped paper: G unknown
        env = cv2.dilate(cv2.medianBlur(g, 3), box)
        G = cv2.GaussianBlur(env * trusted, (0, 0), 0.8) / np.maximum(cv2.GaussianBlur(trusted, (0, 0), 0.8), 1e-3)
        G = np.where(sat, np.maximum(G, 1.0 - paper), G)
        hi, lo = np.minimum(1.0, paper + G), ink + G
        mid = (hi + lo) / 2.0
        dark = L < mid
    zone = G > 0.05  # outside the highlight the plain grid stands
    gap = hi - lo
    w = np.zeros_like(weight)
    w[np.abs(L - mid) < 0.35 * gap] = 0.5
    w[(gap < 0.25) | sat] = 1.0
    return np.where(zone, dark, modules), np.where(zone, w, weight)


def sample_grid(gray: np.ndarray, quad, *, max_versions: int = 3) -> list[GridSample]:
    """Candidate grids for the code whose corners are `quad` (see the module docstring)."""
    return list(iter_grids(gray, quad, max_versions=max_versions))


def iter_grids(gray: np.ndarray, quad, *, max_versions: int = 3) -> Iterator[GridSample]:
    """`sample_grid` lazily: a caller that decodes the first candidate skips the rest."""
    q = np.asarray(quad, np.float32).reshape(4, 2)
    sides = [float(np.linalg.norm(q[i] - q[(i + 1) % 4])) for i in range(4)]
    L = int(round(np.mean(sides)))
    if not np.all(np.isfinite(q)) or L < 21 or L > 2000 or min(sides) < 0.5 * max(sides):
        return
    # Room for corners a few px off and for the finder search window (finder + 1 module).
    m = max(8, L // 8)
    S = L + 2 * m
    dst = np.float32([[m, m], [m + L, m], [m + L, m + L], [m, m + L]])
    Hq = cv2.getPerspectiveTransform(q, dst)
    rect0 = cv2.warpPerspective(gray, Hq, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inner = rect0[m : m + L, m : m + L]
    thr, _, _ = _otsu(inner[:: max(1, L // 64), :: max(1, L // 64)].astype(np.float32))
    dark0 = rect0 < thr
    # Which corners hold a finder: rot90 by k brings quad corner k to the top-left.
    pitch = {}
    for k in range(4):
        p = _finder_pitch(np.rot90(dark0, k), m)
        if p is not None:
            pitch[k] = p
    if not pitch:
        return
    p_est = float(np.median(list(pitch.values())))
    # Finders of one code share one pitch; a corner that disagrees saw something else.
    pitch = {k: v for k, v in pitch.items() if abs(v - p_est) <= 0.35 * p_est}
    if len(pitch) == 3:
        orders = [(set(range(4)) - set(pitch)).pop() + 2]
    else:
        # A finder hidden (blot) or an extra finder-like corner: try the corners whose two
        # neighbours show the most finders first.
        orders = sorted(range(4), key=lambda k: -((k in pitch) * 2 + ((k + 1) % 4 in pitch) + ((k + 3) % 4 in pitch)))
    n_est = L / p_est
    versions = sorted(range(1, 41), key=lambda v: abs(T.size(v) - n_est))
    versions = [v for v in versions if abs(T.size(v) - n_est) <= max(4.5, 0.12 * n_est)][:max_versions]
    # Local std over ~2 modules (texture) and a light smoothing for sampling: computed once
    # from the estimated pitch; rotating them with the image keeps them aligned.
    w = max(3, int(round(2 * p_est)) | 1)
    f = rect0.astype(np.float32)
    mean = cv2.blur(f, (w, w))
    std0 = np.sqrt(np.maximum(cv2.blur(f * f, (w, w)) - mean * mean, 0))
    k = max(1, int(round(p_est / 3)))
    smooth0 = cv2.blur(rect0, (k, k)) if k > 1 else rect0
    for tl in orders[:1] if len(pitch) == 3 else orders:
        tl %= 4
        rect = np.ascontiguousarray(np.rot90(rect0, tl))
        std = np.ascontiguousarray(np.rot90(std0, tl))
        smooth = np.ascontiguousarray(np.rot90(smooth0, tl))
        corners = [tuple(map(float, q[(tl + i) % 4])) for i in range(4)]
        for v in versions:
            for modules, erasures in _sample(rect, std, smooth, v, L, m):
                yield GridSample(modules, erasures, v, corners)
