"""QR decoding from a sampled module grid, with Reed–Solomon erasures.

zxing-cpp and OpenCV stop at a code whose blots cost more codewords than error correction
can fix when the damage positions are unknown. Once the image sampler (`qr_sample`) has
told us *which* modules look unreliable (uniform blots, glare, no contrast), those
codewords become erasures, and Reed–Solomon corrects twice as many erasures as errors.

API::

    decode_grid(modules, erasures=None, *, max_false_p=1e-6) -> GridResult | None

`modules`: 2-D bool array, True = dark, shape (4v+17, 4v+17), no quiet zone, top-left
finder at [0, 0]. `erasures`: same shape, True (or a weight > 0) where the module is
unreliable; the weight ranks codewords when there are more erasures than a block can take.

Steps: format information (both copies, nearest of the 32 BCH(15,5) words, <= 3 bit
errors, erased bits not counted) -> version information for v >= 7 (BCH(18,6), must
agree with the size) -> unmask data modules -> codewords in zigzag order -> blocks
de-interleaved -> per block Reed–Solomon (`reedsolo`, QR's GF(256): prim 0x11d,
generator 2, fcr 0) with the erased codewords as erasure positions -> the corrected
block is re-encoded and must equal itself (zero syndrome) -> segments (numeric,
alphanumeric, byte, kanji, ECI; structured append and FNC1 headers are skipped) ->
terminator, zero bits to the byte boundary and 0xEC/0x11 pad bytes checked.

A false read is worse than a no-read, so anything doubtful returns None:
  * per block, 2*errors + erasures must stay within EC - p (p = the codewords ISO/IEC
    18004 reserves for misdecode protection in versions 1-L/M/Q/H, 2-L, 3-L), and
  * the chance that a *random* word would have decoded with that many errors and
    erasures, C(n-s, t) * 255^t / 256^(EC-s), must be <= `max_false_p`. Errors alone
    always pass this (a full-capacity error decode is ~1e-7 even for a 26-codeword block);
    it bites when erasures eat the redundancy: a block with s = EC erasures "decodes"
    any garbage, so at the default 1e-6 a block keeps at least 3 unused EC codewords
    when it is erasure-only,
  * unless the padding vouches for it: a block decode with a chance up to 1e-2 is kept
    when pad codewords (0xEC/0x11) that the corrector itself produced (erased or
    corrected positions) come out right, each a 1-in-256 check, so that
    chance * 256^-(such pad codewords) <= `max_false_p`. Pad codewords read directly
    from the image add nothing (a wrong codeword would agree with them as well).

Capacity accounting (for the quality work): `capacity` = total EC codewords of the
symbol; one error costs 2 of them, one erasure 1, so
    unused_ec = 1 - (2 * corrected + erased) / capacity
and `worst_block` is the same fraction used by the most damaged block (the one that
decides whether the next, slightly worse print still reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import reedsolo

from edge_runtime.code import best_effort_text
from edge_runtime.decode import qr_tables as T

# ECI assignment number -> Python codec (ISO/IEC 18004 / AIM ECI; the ones met in practice).
_ECI_CODECS = {
    0: "cp437", 1: "latin-1", 2: "cp437", 3: "latin-1", 4: "iso8859-2", 5: "iso8859-3",
    6: "iso8859-4", 7: "iso8859-5", 8: "iso8859-6", 9: "iso8859-7", 10: "iso8859-8",
    11: "iso8859-9", 12: "iso8859-10", 13: "iso8859-11", 15: "iso8859-13", 16: "iso8859-14",
    17: "iso8859-15", 18: "iso8859-16", 20: "shift_jis", 21: "cp1250", 22: "cp1251",
    23: "cp1252", 24: "cp1256", 25: "utf-16-be", 26: "utf-8", 27: "ascii", 28: "big5",
    29: "gb18030", 30: "euc_kr",
}
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


@dataclass
class GridResult:
    raw: bytes
    text: str
    version: int
    ec_level: str
    mask: int
    corrected: int  # codewords corrected as errors (positions found by the decoder)
    erased: int  # codewords passed to Reed–Solomon as erasures
    capacity: int  # total EC codewords of the symbol
    worst_block: float = 0.0  # (2*errors + erasures) / EC of the most used block
    eci: int | None = None

    @property
    def unused_ec(self) -> float:
        return 1.0 - (2 * self.corrected + self.erased) / self.capacity if self.capacity else 0.0

    @property
    def ec(self) -> dict:
        return {"corrected": self.corrected, "erased": self.erased, "capacity": self.capacity}


# ---------------------------------------------------------------- format / version info

def _format_positions(n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(row, col) of format bit i (LSB first) in the copy around the top-left finder and in
    the copy split between the other two finders."""
    a = [(i, 8) for i in range(6)] + [(7, 8), (8, 8), (8, 7)] + [(8, 14 - i) for i in range(9, 15)]
    b = [(8, n - 1 - i) for i in range(8)] + [(n - 15 + i, 8) for i in range(8, 15)]
    return a, b


def _version_positions(n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    a = [(i // 3, n - 11 + i % 3) for i in range(18)]  # above the top-right finder
    b = [(n - 11 + i % 3, i // 3) for i in range(18)]  # left of the bottom-left finder
    return a, b


def _read_word(modules: np.ndarray, erased: np.ndarray, pos: list[tuple[int, int]]) -> tuple[int, int]:
    word = care = 0
    for i, (r, c) in enumerate(pos):
        if modules[r, c]:
            word |= 1 << i
        if not erased[r, c]:
            care |= 1 << i
    return word, care


def _nearest(words: dict, reads: list[tuple[int, int]], max_dist: int) -> list[tuple[int, object]]:
    """Valid words within `max_dist` of any copy (erased bits ignored), best first: the
    minimum distance between valid words is 7 (format) / 8 (version), so <= 3 is unique
    per copy; two copies may disagree, and then both are candidates."""
    best: dict[object, int] = {}
    for word, care in reads:
        for valid, value in words.items():
            d = bin((valid ^ word) & care).count("1")
            if d <= max_dist and d < best.get(value, max_dist + 1):
                best[value] = d
    return sorted(((d, v) for v, d in best.items()), key=lambda x: x[0])


def read_format(modules: np.ndarray, erased: np.ndarray) -> list[tuple[int, tuple[str, int]]]:
    """Candidate (distance, (level, mask)) pairs, best first."""
    a, b = _format_positions(modules.shape[0])
    reads = [_read_word(modules, erased, a), _read_word(modules, erased, b)]
    # A copy with more than 3 erased bits is too weak to vouch for a word on its own.
    reads = [(w, c) for w, c in reads if bin(c).count("1") >= 12]
    return _nearest(T.FORMAT_WORDS, reads, 3)


def read_version(modules: np.ndarray, erased: np.ndarray) -> int | None:
    """The version the version information says (v >= 7), None if neither copy is readable."""
    a, b = _version_positions(modules.shape[0])
    reads = [_read_word(modules, erased, a), _read_word(modules, erased, b)]
    reads = [(w, c) for w, c in reads if bin(c).count("1") >= 15]
    found = _nearest(T.VERSION_WORDS, reads, 3)
    return found[0][1] if found else None


# ---------------------------------------------------------------- masks

def _mask_bits(mask: int, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    if mask == 0:
        return (r + c) % 2 == 0
    if mask == 1:
        return r % 2 == 0
    if mask == 2:
        return c % 3 == 0
    if mask == 3:
        return (r + c) % 3 == 0
    if mask == 4:
        return (r // 2 + c // 3) % 2 == 0
    if mask == 5:
        return (r * c) % 2 + (r * c) % 3 == 0
    if mask == 6:
        return ((r * c) % 2 + (r * c) % 3) % 2 == 0
    return ((r + c) % 2 + (r * c) % 3) % 2 == 0


@lru_cache(maxsize=None)
def _data_mask(version: int, mask: int) -> np.ndarray:
    r, c = T.data_coords(version)
    m = _mask_bits(mask, r, c)
    m.setflags(write=False)
    return m


# ---------------------------------------------------------------- Reed–Solomon

@lru_cache(maxsize=None)
def _codec(nsym: int) -> reedsolo.RSCodec:
    # QR's field: GF(2^8) with x^8+x^4+x^3+x^2+1 (0x11d), generator alpha = 2, roots
    # alpha^0..alpha^(nsym-1) (fcr = 0). The tests check it against segno's own EC bytes.
    return reedsolo.RSCodec(nsym, c_exp=8, prim=0x11D, generator=2, fcr=0)


def _gf_tables() -> tuple[np.ndarray, np.ndarray]:
    exp = np.zeros(512, np.int64)
    log = np.zeros(256, np.int64)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    exp[255:510] = exp[:255]
    return exp, log


_EXP, _LOG = _gf_tables()


def _poly_eval(poly, points: np.ndarray) -> np.ndarray:
    """poly (highest degree first, GF(256)) at alpha^points, vectorised: the two O(n * nsym)
    loops of decoding (syndromes, Chien search) are the ones pure Python is slow at."""
    c = np.asarray(poly, np.int64)
    nz = c != 0
    if not nz.any():
        return np.zeros(len(points), np.int64)
    deg = (len(c) - 1 - np.arange(len(c)))[nz]
    terms = _EXP[(_LOG[c[nz]][None, :] + (points[:, None] * deg[None, :]) % 255) % 255]
    return np.bitwise_xor.reduce(terms, axis=1)


def _syndromes(word, nsym: int) -> np.ndarray:
    return _poly_eval(np.frombuffer(bytes(word), np.uint8), np.arange(nsym))


def _syndrome_zero(word: bytes, nsym: int) -> bool:
    """True iff `word` is a codeword: c(alpha^j) = 0 for j = 0..nsym-1. Computed here in
    numpy, independently of reedsolo, so a wrong correction cannot vouch for itself."""
    return not _syndromes(word, nsym).any()


def _rs_correct(block: bytes, nsym: int, erase_pos: list[int]) -> tuple[bytes, list[int]]:
    """reedsolo's errors-and-erasures decoder (Forney syndromes, Berlekamp–Massey, Forney
    magnitudes: `rs_correct_msg`) with its syndrome and Chien-search loops done in numpy
    (~3x faster for a damaged block, measured on x86). Raises reedsolo.ReedSolomonError
    when it cannot decode. Checked against `RSCodec.decode` on random words by the tests."""
    codec = _codec(nsym)
    # reedsolo's module functions read the field from module globals; RSCodec.decode sets
    # them the same way before every call (every user in this process uses QR's field).
    reedsolo.gf_log, reedsolo.gf_exp, reedsolo.field_charac = codec.gf_log, codec.gf_exp, codec.field_charac
    n = len(block)
    msg = bytearray(block)
    for e in erase_pos:
        msg[e] = 0
    synd = [0] + [int(x) for x in _syndromes(msg, nsym)]
    if max(synd) == 0:
        return bytes(msg), []
    fsynd = reedsolo.rs_forney_syndromes(synd, erase_pos, n, 2)
    err_loc = reedsolo.rs_find_error_locator(fsynd, nsym, erase_count=len(erase_pos))
    roots = np.flatnonzero(_poly_eval(err_loc[::-1], np.arange(n)) == 0)
    err_pos = [n - 1 - int(i) for i in roots]
    if len(err_pos) != len(err_loc) - 1:
        raise reedsolo.ReedSolomonError("error locator roots do not match its degree")
    msg = reedsolo.rs_correct_errata(msg, synd, list(erase_pos) + err_pos, 0, 2)
    return bytes(msg), err_pos


def _false_p(n: int, nsym: int, erasures: int, errors: int) -> float:
    """Chance that a random word decodes with this many errors given these erasures: the
    fraction of the (n-s)-symbol space covered by radius-t spheres around codewords."""
    red = nsym - erasures
    if red <= 0:
        return 1.0
    return math.comb(n - erasures, errors) * 255.0**errors / 256.0**red


# A block decode whose chance of being a misdecode is between max_false_p and this is kept
# as a weak hypothesis: it is accepted only if pad codewords it had to reconstruct (erased or
# corrected positions) come out right, each one a 1-in-256 check.
_WEAK_P = 1e-2


@dataclass
class _BlockFix:
    data: bytes
    errors: int
    erasures: int
    changed: frozenset  # positions in the block that came from the corrector, not the image
    false_p: float


def _rs_block(block: bytes, nsym: int, p: int, erase_rank: np.ndarray, max_false_p: float) -> _BlockFix | None:
    """Correct one block, or None. `erase_rank` holds a weight per codeword (0 = trusted).

    Hypotheses: all erasures, the most suspect ones only (room for one, then two errors),
    errors alone. Each must give a zero syndrome (checked here, not by reedsolo), stay within
    EC - p, and differ from the read block exactly where it says. The first with a misdecode
    chance <= max_false_p wins; otherwise the likeliest weak one is returned for the caller's
    padding evidence to confirm or refuse.
    """
    n = len(block)
    budget = nsym - p
    if _syndrome_zero(block, nsym):
        return _BlockFix(block[: n - nsym], 0, 0, frozenset(), 0.0)  # erasure marks were false alarms
    erased_idx = [int(i) for i in np.argsort(-erase_rank, kind="stable") if erase_rank[i] > 0]
    tries: list[list[int]] = []
    if erased_idx and len(erased_idx) <= budget:
        tries.append(sorted(erased_idx))
    # More suspects than the budget (a glare spot marks more modules than it flips): the
    # most suspect ones up to the whole budget, then with room for one and two errors.
    for room in (0, 2, 4):
        k = min(len(erased_idx), budget - room)
        if k > 0 and all(len(t) != k for t in tries):
            tries.append(sorted(erased_idx[:k]))
    tries.append([])
    weak: _BlockFix | None = None
    for erase in tries:
        try:
            full, err_pos = _rs_correct(block, nsym, erase)
        except (reedsolo.ReedSolomonError, ValueError, IndexError, ZeroDivisionError):
            continue
        erase_set = set(erase)
        errors = len(set(err_pos) - erase_set)
        s = len(erase)
        if 2 * errors + s > budget:
            continue
        # A read must hold by a check of its own, not by trust in the corrector (which can
        # land on a wrong codeword past capacity): recompute the corrected block's syndrome.
        if not _syndrome_zero(full, nsym):
            continue
        # A "corrected" word further from what we read than claimed is a misdecode.
        diff = {i for i in range(n) if full[i] != block[i] and i not in erase_set}
        if len(diff) > errors:
            continue
        # Several hypotheses were tried: each one was a chance for garbage to pass.
        fp = _false_p(n, nsym, s, errors) * len(tries)
        fix = _BlockFix(full[: n - nsym], errors, s, frozenset(diff | erase_set), fp)
        if fp <= max_false_p:
            return fix
        if fp <= _WEAK_P and (weak is None or fp < weak.false_p):
            weak = fix
    return weak


# ---------------------------------------------------------------- segments

class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.n = len(data) * 8

    def left(self) -> int:
        return self.n - self.pos

    def read(self, k: int) -> int:
        if k > self.left():
            raise _Refuse
        v = 0
        for _ in range(k):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


class _Refuse(Exception):
    """The data do not parse as a well-formed QR bit stream."""


def _parse(data: bytes, version: int) -> tuple[bytes, str, int | None, int]:
    bits = _Bits(data)
    raw = bytearray()
    parts: list[tuple[bytes, str | None]] = []  # (bytes, codec or None = undeclared)
    eci: int | None = None
    codec: str | None = None
    chars = 0
    while True:
        if bits.left() < 4:
            if bits.read(bits.left()) != 0:  # a truncated terminator is all zeros
                raise _Refuse
            break
        mode = bits.read(4)
        if mode == 0:
            break
        if mode == 0b0111:  # ECI designator
            first = bits.read(8)
            if first & 0x80 == 0:
                value = first
            elif first & 0xC0 == 0x80:
                value = ((first & 0x3F) << 8) | bits.read(8)
            elif first & 0xE0 == 0xC0:
                value = ((first & 0x1F) << 16) | bits.read(16)
            else:
                raise _Refuse
            if value not in _ECI_CODECS:
                raise _Refuse
            eci, codec = value, _ECI_CODECS[value]
            continue
        if mode == 0b0011:  # structured append: position, total, parity; the part reads alone
            bits.read(16)
            continue
        if mode == 0b0101:  # FNC1 first position (GS1): no payload of its own
            continue
        if mode == 0b1001:  # FNC1 second position: application indicator
            bits.read(8)
            continue
        if mode not in (1, 2, 4, 8):
            raise _Refuse  # hanzi, reserved: nothing a plant label uses; never guess
        count = bits.read(T.char_count_bits(mode, version))
        if mode == 1:
            seg = _numeric(bits, count)
        elif mode == 2:
            seg = _alnum(bits, count)
        elif mode == 4:
            seg = bytes(bits.read(8) for _ in range(count))
        else:
            seg = _kanji(bits, count)
        chars += count
        raw += seg
        parts.append((seg, "shift_jis" if mode == 8 else codec))
    # Zero bits to the byte boundary, then alternating pad codewords.
    rem = (8 - bits.pos % 8) % 8
    if rem > bits.left() or bits.read(rem) != 0:
        raise _Refuse
    pad_start = bits.pos // 8
    tail = data[pad_start:]
    if tail[:1] == b"\x00":
        # segno (<= 1.6) adds a whole zero byte when the terminator already ends on a byte
        # boundary; labels made with it are real, so tolerate exactly that one byte.
        tail = tail[1:]
        pad_start += 1
    pad = (0xEC, 0x11)
    for i, byte in enumerate(tail):
        if byte != pad[i % 2]:
            raise _Refuse
    if chars == 0:
        raise _Refuse  # an empty symbol is not a label; most likely a misdecode
    if eci is None:
        text = best_effort_text(bytes(raw))
    else:
        try:
            text = "".join(b.decode(c) if c else best_effort_text(b) for b, c in parts)
        except (UnicodeDecodeError, LookupError):
            text = best_effort_text(bytes(raw))
    return bytes(raw), text, eci, pad_start


def _numeric(bits: _Bits, count: int) -> bytes:
    out = []
    while count >= 3:
        v = bits.read(10)
        if v > 999:
            raise _Refuse
        out.append(f"{v:03d}")
        count -= 3
    if count == 2:
        v = bits.read(7)
        if v > 99:
            raise _Refuse
        out.append(f"{v:02d}")
    elif count == 1:
        v = bits.read(4)
        if v > 9:
            raise _Refuse
        out.append(str(v))
    return "".join(out).encode("ascii")


def _alnum(bits: _Bits, count: int) -> bytes:
    out = []
    while count >= 2:
        v = bits.read(11)
        if v >= 45 * 45:
            raise _Refuse
        out.append(_ALNUM[v // 45] + _ALNUM[v % 45])
        count -= 2
    if count:
        v = bits.read(6)
        if v >= 45:
            raise _Refuse
        out.append(_ALNUM[v])
    return "".join(out).encode("ascii")


def _kanji(bits: _Bits, count: int) -> bytes:
    out = bytearray()
    for _ in range(count):
        v = bits.read(13)
        hi, lo = divmod(v, 0xC0)
        c = (hi << 8) | lo
        c += 0x8140 if c < 0x1F00 else 0xC140
        b1, b2 = c >> 8, c & 0xFF
        # Only the two Shift-JIS ranges the kanji mode can express are valid.
        if not (0x81 <= b1 <= 0x9F or 0xE0 <= b1 <= 0xEB) or not (0x40 <= b2 <= 0xFC) or b2 == 0x7F:
            raise _Refuse
        out += bytes((b1, b2))
    return bytes(out)


# ---------------------------------------------------------------- the decoder

def decode_grid(modules: np.ndarray, erasures: np.ndarray | None = None, *, max_false_p: float = 1e-6) -> GridResult | None:
    """Decode a QR symbol from its module grid; None unless the read is verified.

    Never raises on a malformed grid (wrong size, garbage): it returns None.
    """
    m = np.asarray(modules).astype(bool)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 21 or (m.shape[0] - 17) % 4 or m.shape[0] > 177:
        return None
    weight = np.zeros(m.shape, np.float32) if erasures is None else np.asarray(erasures, np.float32)
    if weight.shape != m.shape:
        return None
    erased = weight > 0
    version = (m.shape[0] - 17) // 4
    if version >= 7:
        said = read_version(m, erased)
        if said is not None and said != version:
            return None  # the grid's size and the symbol disagree: wrong sampling
    rows, cols = T.data_coords(version)
    bits = m[rows, cols]
    bit_weight = weight[rows, cols]
    total = T.total_codewords(version)
    cw_weight = bit_weight[: total * 8].reshape(total, 8).sum(axis=1)
    for _dist, (level, mask) in read_format(m, erased)[:2]:
        data_bits = bits ^ _data_mask(version, mask)
        stream = np.packbits(data_bits[: total * 8]).tobytes()
        result = _decode_stream(stream, cw_weight, version, level, max_false_p)
        if result is not None:
            raw, text, eci, corrected, erased_n, worst = result
            return GridResult(
                raw=raw, text=text, version=version, ec_level=level, mask=mask, corrected=corrected,
                erased=erased_n, capacity=T.ec_codewords(version, level), worst_block=worst, eci=eci,
            )
    return None


def _decode_stream(stream: bytes, cw_weight: np.ndarray, version: int, level: str, max_false_p: float):
    p = T.misdecode_p(version, level)
    data = bytearray()
    corrected = erased = 0
    worst = 0.0
    fixes: list[tuple[int, int, _BlockFix]] = []  # (offset of the block's data in `data`, n_data, fix)
    for (nd, ne), idx in zip(T.blocks(version, level), T.interleave_index(version, level)):
        block = bytes(stream[i] for i in idx)
        fix = _rs_block(block, ne, p, cw_weight[idx], max_false_p)
        if fix is None:
            return None
        fixes.append((len(data), nd, fix))
        data += fix.data
        corrected += fix.errors
        erased += fix.erasures
        worst = max(worst, (2 * fix.errors + fix.erasures) / ne)
    try:
        raw, text, eci, pad_start = _parse(bytes(data), version)
    except _Refuse:
        return None
    for start, nd, fix in fixes:
        if fix.false_p <= max_false_p:
            continue
        # Pad codewords the corrector produced: under "this block is garbage" each would be
        # right by a 1-in-256 chance only.
        evidence = sum(1 for i in fix.changed if i < nd and start + i >= pad_start)
        if fix.false_p * 256.0**-evidence > max_false_p:
            return None
    return raw, text, eci, corrected, erased, worst
