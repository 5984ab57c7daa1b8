"""Print quality of a read QR code, in the spirit of ISO/IEC 15415 and ISO/IEC TR 29158.

A line camera is not a calibrated verifier (no reference reflectance, no fixed aperture,
one image instead of ten scans, the camera's own exposure): this is *quality*, a trend
a printer's maintainer can act on, not a certificate. Reflectance is the frame's gray
level / 255.

API::

    measure(gray, corners, *, ec=None) -> dict | None    # the "quality" object of a result
    attach_quality(gray, codes) -> list[Code]            # fills code.quality for read codes

`corners`: the code's four (x, y) corners in `gray`, clockwise from its top-left (as
`Code.corners`; any start corner is accepted: the one opposite the missing finder wins).
`ec`: `Code.ec` when a decoder knows its Reed–Solomon use ({"corrected", "erased",
"capacity"}), used for UEC only when the grid cannot be decoded here.

Steps, all vectorised (numpy + a few cv2.remap calls, ~0.5–1 ms a code):
  1. modules per side: the finder patterns' 1:1:3:1:1 run lengths along the diagonals
     from the corners give the module pitch; the candidate versions near it are told
     apart by the timing patterns (they alternate exactly only on the right grid);
  2. grid geometry: finder and alignment pattern centres are located (darkness centroid
     around their expected places); an affine fit of them gives AN (unequal pitch along
     the two axes) and GN (worst deviation from the fit, in modules);
  3. reflectance at every module centre (mean of 3x3 points over the middle half of the
     module: a stand-in for ISO's synthetic aperture) through a homography fitted to the
     located centres;
  4. SC, minimum reflectance, MOD and reflectance margin (codeword grades with ISO's UEC
     overlay), fixed pattern damage (finders + separators, timing), UEC from our own
     errors-only Reed–Solomon decode (ISO counts every damaged codeword as an error).
"""

from __future__ import annotations

import numpy as np

import cv2

from edge_runtime.code import Code
from edge_runtime.decode import qr_tables as T
from edge_runtime.decode.qr_grid import decode_grid, read_format

LETTERS = "FDCBA"  # index = grade 0..4

# ISO/IEC 15415 grade thresholds (grade 4, 3, 2, 1; below the last = 0).
SC_T = (0.70, 0.55, 0.40, 0.20)
MOD_T = (0.50, 0.40, 0.30, 0.20)  # per module, for modulation and reflectance margin
UEC_T = (0.62, 0.50, 0.37, 0.25)
AN_T = (0.06, 0.08, 0.10, 0.12)  # at most
GN_T = (0.38, 0.50, 0.63, 0.75)  # at most
TIMING_T = (0.0, 0.07, 0.14, 0.20)  # fraction of timing modules in error, at most (ours)

# Below this many pixels a module, module centres are mostly blur: modulation would grade
# the camera's resolution, not the print (a verifier picks an aperture for the X-dimension;
# we cannot), so quality is not measured (None).
MIN_PITCH_PX = 2.5

# Module-centre aperture: 3x3 points at -0.25, 0, +0.25 module (the middle half).
_SUB = np.array([-0.25, 0.0, 0.25], np.float32)
_ROUGH = np.arange(24) / 23.0 * 0.96 + 0.02  # a 24x24 look at the code for a first threshold


def grade_at_least(v: float, t: tuple[float, float, float, float]) -> int:
    return 4 if v >= t[0] else 3 if v >= t[1] else 2 if v >= t[2] else 1 if v >= t[3] else 0


def grade_at_most(v: float, t: tuple[float, float, float, float]) -> int:
    return 4 if v <= t[0] else 3 if v <= t[1] else 2 if v <= t[2] else 1 if v <= t[3] else 0


def letter(score: float) -> str:
    """ISO 15415's letters for an averaged grade: A >= 3.5, B >= 2.5, C >= 1.5, D >= 0.5."""
    return "A" if score >= 3.5 else "B" if score >= 2.5 else "C" if score >= 1.5 else "D" if score >= 0.5 else "F"


# ---------------------------------------------------------------- geometry helpers

def _project(H: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (u, v) through homography H (numpy broadcasting, float32 out for cv2.remap)."""
    d = H[2, 0] * u + H[2, 1] * v + H[2, 2]
    x = (H[0, 0] * u + H[0, 1] * v + H[0, 2]) / d
    y = (H[1, 0] * u + H[1, 1] * v + H[1, 2]) / d
    return x.astype(np.float32), y.astype(np.float32)


def _sample(gray: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear gray values at float32 point maps (2-D: cv2.remap wants image-shaped maps)."""
    return cv2.remap(gray, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def _diag_module(line: np.ndarray, step: float) -> float | None:
    """Module size (in the line's parameter units) if the line starts across a finder's
    diagonal: dark/light/dark/light/dark in the ratio 1:1:3:1:1; None if it does not."""
    thr = (float(line.min()) + float(line.max())) / 2.0
    dark = line < thr
    edges = np.flatnonzero(np.diff(dark.astype(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [len(line)]))
    runs = np.diff(bounds)
    colours = dark[bounds[:-1]]
    i = 0
    while i < len(runs) and not colours[i]:
        i += 1  # quiet zone before the finder (corners a bit outside the symbol)
    if len(runs) - i < 5:
        return None
    a, b, c, d, e = (float(r) for r in runs[i : i + 5])
    unit = (b + c + d + e) / 6.0  # the first run may be cut by a corner inside the symbol
    if not (2.0 * unit <= c <= 4.2 * unit and all(0.4 * unit <= x <= 1.8 * unit for x in (b, d, e)) and a <= 1.8 * unit):
        return None
    return unit * step


def _modules_per_side(gray: np.ndarray, q: np.ndarray) -> tuple[float | None, list[int]]:
    """(estimated modules per side, indices of the corners that show a finder)."""
    H1 = cv2.getPerspectiveTransform(np.float32([[0, 0], [1, 0], [1, 1], [0, 1]]), q)
    side = float(np.sqrt(((q - np.roll(q, -1, axis=0)) ** 2).sum(axis=1)).mean())
    k = int(min(1200, max(96, 1.6 * side)))  # >= ~1.5 samples per pixel along the half diagonal
    step = 0.53 / (k - 1)
    s = np.arange(k) * step - 0.03
    us, vs = [], []
    for cx, cy in ((0, 0), (1, 0), (1, 1), (0, 1)):
        dx, dy = (1 - 2 * cx), (1 - 2 * cy)
        us.append(cx + dx * s)
        vs.append(cy + dy * s)
    x, y = _project(H1, np.array(us), np.array(vs))
    lines = _sample(gray, x, y)  # 4 x k: one remap for the four diagonals
    units = {i: _diag_module(lines[i], step) for i in range(4)}
    found = [i for i, u in units.items() if u is not None]
    if not found:
        return None, []
    n = 1.0 / float(np.median([units[i] for i in found]))
    # A corner whose pitch disagrees with the others saw something else.
    found = [i for i in found if abs(1.0 / units[i] - n) <= 0.2 * n]
    return n, found


def _ideal_function(version: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of modules with a fixed colour, their colour: True = dark): finders, separators,
    timing, alignment patterns, the dark module. Format/version bits are not included."""
    n = T.size(version)
    known = np.zeros((n, n), bool)
    dark = np.zeros((n, n), bool)
    yy, xx = np.mgrid[0:7, 0:7]
    ring = np.maximum(abs(yy - 3), abs(xx - 3))
    finder = (ring != 2)
    for r0, c0 in ((0, 0), (0, n - 7), (n - 7, 0)):
        dark[r0 : r0 + 7, c0 : c0 + 7] = finder
    known[:8, :8] = known[:8, n - 8 :] = known[n - 8 :, :8] = True
    idx = np.arange(8, n - 8)
    known[6, idx] = known[idx, 6] = True
    dark[6, idx] = idx % 2 == 0
    dark[idx, 6] = idx % 2 == 0
    cs = T.alignment_centres(version)
    yy, xx = np.mgrid[0:5, 0:5]
    align = np.maximum(abs(yy - 2), abs(xx - 2)) != 1
    for r in cs:
        for c in cs:
            if (r == 6 and c == 6) or (r == 6 and c == cs[-1]) or (r == cs[-1] and c == 6):
                continue
            known[r - 2 : r + 3, c - 2 : c + 3] = True
            dark[r - 2 : r + 3, c - 2 : c + 3] = align
    known[n - 8, 8] = dark[n - 8, 8] = True  # the dark module
    return known, dark


_IDEAL: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _ideal(version: int) -> tuple[np.ndarray, np.ndarray]:
    if version not in _IDEAL:
        _IDEAL[version] = _ideal_function(version)
    return _IDEAL[version]


def _timing_score(gray: np.ndarray, H1: np.ndarray, n: int, thr: float) -> float:
    """Fraction of timing modules (row 6 and column 6) with the alternating colour: ~1 on
    the right grid, ~0.5 on a wrong module count."""
    idx = np.arange(8, n - 8, dtype=np.float64) + 0.5
    fixed = np.full_like(idx, 6.5)
    u = np.stack([idx, fixed]) / n
    v = np.stack([fixed, idx]) / n
    x, y = _project(H1, u, v)
    vals = _sample(gray, x, y)
    expect = (np.arange(8, n - 8) % 2 == 0)[None, :]
    return float(np.mean((vals < thr) == expect))


def _locate(gray: np.ndarray, H0: np.ndarray, centres: np.ndarray, half: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Darkness centroids (module coordinates) around expected pattern centres.

    Windows of +-`half` modules hold the pattern's dark core and its light ring only, so the
    centroid is the core's centre as long as the guess is within about half a module.
    Up to two passes; returns (centres, ok) where ok is False for a window with no dark core
    (blot, glare) or a centroid that wandered: those keep their expected place.
    """
    g = 12  # samples per window side
    t = (np.arange(g, dtype=np.float64) + 0.5) / g * 2.0 - 1.0  # -1..1
    expect = (1.5 / half) ** 2 * np.where(half > 1.5, 1.0, 1.0 / 2.25)  # dark core share
    cur = centres.astype(np.float64).copy()
    ok = np.ones(len(cur), bool)
    for _ in range(2):
        uu = cur[:, 0, None, None] + half[:, None, None] * t[None, None, :]
        vv = cur[:, 1, None, None] + half[:, None, None] * t[None, :, None]
        x, y = _project(H0, uu, vv)
        x, y = x.reshape(-1, g), y.reshape(-1, g)
        vals = _sample(gray, x, y).reshape(len(cur), g, g)
        w = np.clip(thr - vals, 0, None)
        tot = w.sum(axis=(1, 2))
        # The dark core covers a known share of the window (finder 3x3 of 4x4 modules,
        # alignment 1x1 of 2x2): a blot or glare over the pattern does not, and must not
        # pull the grid towards itself.
        share = (vals < thr).mean(axis=(1, 2))
        good = (tot > 1e-3) & (np.abs(share - expect) < 0.2)
        cu = (w * uu).sum(axis=(1, 2)) / np.maximum(tot, 1e-6)
        cv = (w * vv).sum(axis=(1, 2)) / np.maximum(tot, 1e-6)
        new = np.stack([cu, cv], 1)
        moved = np.linalg.norm(new - centres, axis=1)
        good &= moved < 0.8
        step = np.abs(new - cur).max()
        cur = np.where(good[:, None], new, centres)
        ok = good
        if step < 0.1:
            break  # the window was already centred: a second pass would not move it
    return cur, ok


# ---------------------------------------------------------------- grading helpers

def _low(x: np.ndarray, frac: float) -> float:
    """The value `frac` of the way up the sorted values (a percentile without np.percentile's
    Python overhead, which costs more than everything else here on small arrays)."""
    x = np.ravel(x)
    k = min(len(x) - 1, int(frac * len(x)))
    return float(np.partition(x, k)[k])


def _module_grades(margin: np.ndarray) -> np.ndarray:
    """Grades 4..0 of per-module modulation / margin values (negative margin = wrong side = 0)."""
    g = np.zeros(margin.shape, np.int8)
    for k, t in enumerate(MOD_T[::-1]):
        g[margin >= t] = k + 1
    return g


def _overlay(cw_grades: np.ndarray, version: int, level: str) -> int:
    """ISO 15415's UEC overlay: at each grade level g, the codewords graded below g count
    as erasures; the notional UEC they leave (worst block) caps that level. The parameter's
    grade is the best capped level."""
    p = T.misdecode_p(version, level)
    best = 0
    for g in (4, 3, 2, 1):
        worst = 1.0
        for (_nd, ne), idx in zip(T.blocks(version, level), T.interleave_index(version, level)):
            e = int(np.count_nonzero(cw_grades[idx] < g))
            worst = min(worst, 1.0 - e / max(1, ne - p))
        best = max(best, min(g, grade_at_least(worst, UEC_T)))
        if best == g:
            break
    return best


def _clean_grid(modules: np.ndarray):
    """(level, mask) if every Reed–Solomon block of the grid has a zero syndrome as read:
    the usual case, UEC = 1, settled without the full decode (segment parsing is the slow
    part of it). A wrong grid never gets all-zero syndromes, so this vouches for the grid."""
    from edge_runtime.decode.qr_grid import _data_mask, _syndrome_zero  # the decoder's own, not a copy

    n = modules.shape[0]
    version = (n - 17) // 4
    fmt = read_format(modules, np.zeros_like(modules))
    if not fmt or fmt[0][0] != 0:
        return None
    level, mask = fmt[0][1]
    rows, cols = T.data_coords(version)
    total = T.total_codewords(version)
    bits = (modules[rows, cols] ^ _data_mask(version, mask))[: total * 8]
    stream = np.packbits(bits)
    for (_nd, ne), idx in zip(T.blocks(version, level), T.interleave_index(version, level)):
        if not _syndrome_zero(stream[idx].tobytes(), ne):
            return None
    return _Clean(level, mask)


class _Clean:
    """The two fields of a GridResult that measure() uses, for a grid read without errors."""

    def __init__(self, ec_level: str, mask: int) -> None:
        self.ec_level, self.mask = ec_level, mask


def _uec(gray: np.ndarray, modules: np.ndarray, corners: np.ndarray, ec: dict | None):
    """(UEC value or None, GridResult or None). Errors-only decode of our grid first (ISO's
    count); then the reader's own EC use; then the grid decoder's sampler with erasures
    (a code too damaged for errors-only decoding still has a known, low UEC)."""
    clean = _clean_grid(modules)
    if clean is not None:
        return 1.0, clean
    r = decode_grid(modules)
    if r is not None:
        return max(0.0, 1.0 - r.worst_block), r
    if ec and ec.get("capacity"):
        return max(0.0, 1.0 - (2 * ec.get("corrected", 0) + ec.get("erased", 0)) / ec["capacity"]), None
    from edge_runtime.decode.qr_sample import iter_grids

    for s in iter_grids(gray, corners, max_versions=1):
        r2 = decode_grid(s.modules, s.erasures)
        if r2 is not None:
            return max(0.0, 1.0 - r2.worst_block), None
    return None, None


# ---------------------------------------------------------------- the measurement

def measure(gray: np.ndarray, corners, *, ec: dict | None = None) -> dict | None:
    """The quality object for the code at `corners` (see the module docstring), or None when
    its grid cannot be found (no finder pattern) or is too small to judge the print
    (fewer than MIN_PITCH_PX pixels a module)."""
    if gray is None or gray.ndim != 2 or gray.size == 0:
        return None
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    q = np.asarray(corners, np.float32).reshape(-1, 2)
    if q.shape != (4, 2) or not np.all(np.isfinite(q)):
        return None
    n_est, found = _modules_per_side(gray, q)
    if n_est is None or len(found) < 2:
        return None
    if len(found) == 3:
        missing = ({0, 1, 2, 3} - set(found)).pop()
        tl = (missing + 2) % 4
    else:
        tl = 0 if 0 in found else found[0]
    q = np.roll(q, -tl, axis=0)  # the code's top-left first
    H1 = cv2.getPerspectiveTransform(np.float32([[0, 0], [1, 0], [1, 1], [0, 1]]), q)
    versions = [v for v in range(1, 41) if abs(T.size(v) - n_est) <= max(4.5, 0.12 * n_est)]
    if not versions:
        return None
    # A rough threshold for timing / centroids: midway between the code's extremes.
    rough = _sample(gray, *_project(H1, _ROUGH[None, :], _ROUGH[:, None]))
    thr0 = (float(rough.min()) + float(rough.max())) / 2.0
    # Nearest version first: it is nearly always right, and a clean timing pattern settles it.
    versions.sort(key=lambda v: abs(T.size(v) - n_est))
    scores: dict[int, float] = {}
    for v in versions:
        scores[v] = _timing_score(gray, H1, T.size(v), thr0)
        if scores[v] >= 0.95:
            break
    version = max(scores, key=lambda v: (round(scores[v], 2), -abs(T.size(v) - n_est)))
    n = T.size(version)
    H0 = H1 @ np.diag([1.0 / n, 1.0 / n, 1.0])  # module space -> frame

    # -- geometry: located finder and alignment centres
    pts = [(3.5, 3.5), (n - 3.5, 3.5), (3.5, n - 3.5)]
    half = [2.0, 2.0, 2.0]
    cs = T.alignment_centres(version)
    for r in cs:
        for c in cs:
            if (r == 6 and c == 6) or (r == 6 and c == cs[-1]) or (r == cs[-1] and c == 6):
                continue
            pts.append((c + 0.5, r + 0.5))
            half.append(1.0)
    src = np.array(pts, np.float64)
    located, ok = _locate(gray, H0, src, np.array(half), thr0)
    fx, fy = _project(H0, located[:, 0], located[:, 1])
    dst = np.stack([fx, fy], 1).astype(np.float64)
    use_src, use_dst = src[ok], dst[ok]
    if version == 1 or len(use_src) < 4:
        # No alignment pattern seen: the quad's far corner stands in for it.
        use_src = np.vstack([use_src, [[n, n]]])
        use_dst = np.vstack([use_dst, q[2:3].astype(np.float64)])
    if len(use_src) >= 3:
        X = np.hstack([use_src, np.ones((len(use_src), 1))])
        A = np.linalg.solve(X.T @ X, X.T @ use_dst).T  # 2x3 least squares (normal equations: 3x3)
        xp, yp = float(np.linalg.norm(A[:, 0])), float(np.linalg.norm(A[:, 1]))
        pitch = (xp + yp) / 2.0
        an = abs(xp - yp) / pitch if pitch > 0 else 1.0
        resid = use_src @ A[:, :2].T + A[:, 2] - use_dst
        gn = float(np.max(np.linalg.norm(resid, axis=1))) / pitch if pitch > 0 else 1.0
    else:
        xp = yp = pitch = float(np.linalg.norm(q[1] - q[0])) / n
        an, gn = 0.0, 0.0
    if pitch < MIN_PITCH_PX:
        return None  # the numbers would describe the camera's optics, not the print
    if len(use_src) == 4:
        H = cv2.getPerspectiveTransform(np.float32(use_src), np.float32(use_dst))
    elif len(use_src) > 4:
        H = cv2.findHomography(use_src, use_dst, 0)[0]
        if H is None:
            H = H0
    else:
        H = H0
    candidates = [H]
    if int(np.count_nonzero(ok)) == 3 and version == 1:
        # Version 1 has no alignment pattern: the fourth point is the detector's corner, a
        # guess that can be a module off on small codes. The three finders' affine frame is
        # the other hypothesis (wrong only under real perspective); keep the one whose
        # module centres are crisper (larger mean distance from the threshold).
        candidates.append(np.vstack([cv2.getAffineTransform(np.float32(src[:3]), np.float32(dst[:3])), [0.0, 0.0, 1.0]]))

    # -- reflectance at module centres, symbol plus one module of quiet zone
    N = n + 2
    base = np.arange(-1, n + 1, dtype=np.float32) + 0.5
    fine = (base[:, None] + _SUB[None, :]).reshape(-1)
    best = -1.0
    for Hc in candidates:
        v = _sample(gray, *_project(Hc, fine[None, :], fine[:, None])).reshape(N, 3, N, 3).mean(axis=(1, 3)) / 255.0
        crisp = float(np.abs(v - (v.max() + v.min()) / 2.0).mean())
        if crisp > best:
            best, vals = crisp, v
    rmax, rmin = float(vals.max()), float(vals.min())
    sc = rmax - rmin
    if sc <= 1e-6:
        return None
    gt = (rmax + rmin) / 2.0
    R = vals[1:-1, 1:-1]
    dark = R < gt
    mod_m = 2.0 * np.abs(R - gt) / sc

    # -- UEC (and format) from decoding our own grid
    uec, res = _uec(gray, dark, q, ec)
    if res is not None:
        level, mask = res.ec_level, res.mask
    else:
        fmt = read_format(dark, np.zeros_like(dark))
        level, mask = (fmt[0][1] if fmt else (None, None))

    # -- intended colours: fixed patterns from the standard, data as read
    known, ideal_dark = _ideal(version)
    intended = np.where(known, ideal_dark, dark)
    signed = 2.0 * (R - gt) / sc * np.where(intended, -1.0, 1.0)  # > 0 on the right side
    rm_m = signed

    # -- FPD: finder + separator segments (module errors), timing segments (fraction)
    seg_grades = []
    fp_err = fp_tot = 0
    err = dark != ideal_dark
    for r0, c0 in ((0, 0), (0, n - 8), (n - 8, 0)):
        e = int(np.count_nonzero(err[r0 : r0 + 8, c0 : c0 + 8] & known[r0 : r0 + 8, c0 : c0 + 8]))
        fp_err += e
        fp_tot += int(np.count_nonzero(known[r0 : r0 + 8, c0 : c0 + 8]))
        seg_grades.append(max(0, 4 - e))
    idx = np.arange(8, n - 8)
    for e in (int(np.count_nonzero(err[6, idx])), int(np.count_nonzero(err[idx, 6]))):
        fp_err += e
        fp_tot += len(idx)
        seg_grades.append(grade_at_most(e / max(1, len(idx)), TIMING_T))
    fpd = fp_err / max(1, fp_tot)
    g_fpd = min(seg_grades)

    # -- MOD and RM: codeword grades with the UEC overlay when the block structure is known
    rows, cols = T.data_coords(version)
    total = T.total_codewords(version)
    bits = slice(0, total * 8)
    cw_mod = mod_m[rows, cols][bits].reshape(total, 8).min(axis=1)
    cw_rm = rm_m[rows, cols][bits].reshape(total, 8).min(axis=1)
    if level is not None:
        g_mod = _overlay(_module_grades(cw_mod), version, level)
        g_rm = _overlay(_module_grades(cw_rm), version, level)
    else:
        g_mod = grade_at_least(_low(cw_mod, 0.05), MOD_T)
        g_rm = grade_at_least(_low(cw_rm, 0.05), MOD_T)
    # Fixed-pattern modules are graded by FPD, as in ISO 15415; RM here is the data's.
    mod_v = _low(cw_mod, 0.05)
    rm_v = _low(cw_rm, 0.05)

    grades = {
        "sc": grade_at_least(sc, SC_T),
        # Minimum reflectance: the dark level must be at most half the light one.
        "rmin": 4 if rmin <= 0.5 * rmax else 0,
        "mod": g_mod,
        "rm": g_rm,
        "fpd": g_fpd,
        "an": grade_at_most(an, AN_T),
        "gn": grade_at_most(gn, GN_T),
    }
    if uec is not None:
        grades["uec"] = grade_at_least(uec, UEC_T)
    score = float(min(grades.values()))
    return {
        "grade": letter(score),
        "score": score,
        "sc": round(sc, 3),
        "mod": round(max(0.0, mod_v), 3),
        "rm": round(max(0.0, rm_v), 3),
        "fpd": round(fpd, 3),
        "an": round(an, 3),
        "gn": round(gn, 3),
        "uec": None if uec is None else round(uec, 3),
        "rmin": round(rmin, 3),
        "grades": grades,
    }


def attach_quality(gray: np.ndarray, codes: list[Code]) -> list[Code]:
    """Fill `code.quality` for the read codes in `codes` (in place; returned for chaining).

    Noreads and codes that already have a quality are left alone, so calling it twice
    costs nothing. `gray` is the frame the codes' corners refer to (BGR is converted).
    """
    todo = [c for c in codes if c.kind == "read" and c.quality is None and len(c.corners) == 4]
    if not todo:
        return codes
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
    for c in todo:
        try:
            c.quality = measure(gray, c.corners, ec=c.ec)
        except (cv2.error, ValueError, np.linalg.LinAlgError):
            c.quality = None  # quality is an extra: never lose a read over it
    return codes
