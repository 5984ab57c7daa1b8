"""QR Code (model 2) tables: what ISO/IEC 18004 says per version and error-correction level.

Everything that follows from a formula is computed (symbol size, alignment pattern centres,
number of data modules, codewords, function-pattern map, zigzag placement order, BCH words
for format and version information); only the error-correction block structure (ISO/IEC
18004 Table 9) is a table, because the standard picks it by hand. All per-version results
are cached: the decoder calls these for every grid it tries.

API (all pure, cached):
    size(version) -> int                         4v + 17
    alignment_centres(version) -> tuple[int,...]
    function_mask(version) -> np.ndarray (bool)   True where a module is not data
    data_coords(version) -> (rows, cols)          data modules in placement (zigzag) order
    total_codewords(version) -> int
    blocks(version, level) -> list[(n_data, n_ec)]
    interleave_index(version, level) -> list[np.ndarray]   per block: positions in the stream
    misdecode_p(version, level) -> int            codewords reserved for misdecode protection
    FORMAT_WORDS, VERSION_WORDS                   all valid BCH words
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

LEVELS = "LMQH"
# Format information carries the level as 2 bits in this order (not the L<M<Q<H order).
LEVEL_BITS = {"L": 0b01, "M": 0b00, "Q": 0b11, "H": 0b10}

# ISO/IEC 18004 Table 9, per version 1..40 and level L, M, Q, H:
# (EC codewords per block, blocks in group 1, data codewords per group-1 block
#  [, blocks in group 2, data codewords per group-2 block]).
# Checked by the tests against the formula for the total codeword count and against segno.
_EC_TABLE = (
    ((7, 1, 19), (10, 1, 16), (13, 1, 13), (17, 1, 9)),  # 1
    ((10, 1, 34), (16, 1, 28), (22, 1, 22), (28, 1, 16)),  # 2
    ((15, 1, 55), (26, 1, 44), (18, 2, 17), (22, 2, 13)),  # 3
    ((20, 1, 80), (18, 2, 32), (26, 2, 24), (16, 4, 9)),  # 4
    ((26, 1, 108), (24, 2, 43), (18, 2, 15, 2, 16), (22, 2, 11, 2, 12)),  # 5
    ((18, 2, 68), (16, 4, 27), (24, 4, 19), (28, 4, 15)),  # 6
    ((20, 2, 78), (18, 4, 31), (18, 2, 14, 4, 15), (26, 4, 13, 1, 14)),  # 7
    ((24, 2, 97), (22, 2, 38, 2, 39), (22, 4, 18, 2, 19), (26, 4, 14, 2, 15)),  # 8
    ((30, 2, 116), (22, 3, 36, 2, 37), (20, 4, 16, 4, 17), (24, 4, 12, 4, 13)),  # 9
    ((18, 2, 68, 2, 69), (26, 4, 43, 1, 44), (24, 6, 19, 2, 20), (28, 6, 15, 2, 16)),  # 10
    ((20, 4, 81), (30, 1, 50, 4, 51), (28, 4, 22, 4, 23), (24, 3, 12, 8, 13)),  # 11
    ((24, 2, 92, 2, 93), (22, 6, 36, 2, 37), (26, 4, 20, 6, 21), (28, 7, 14, 4, 15)),  # 12
    ((26, 4, 107), (22, 8, 37, 1, 38), (24, 8, 20, 4, 21), (22, 12, 11, 4, 12)),  # 13
    ((30, 3, 115, 1, 116), (24, 4, 40, 5, 41), (20, 11, 16, 5, 17), (24, 11, 12, 5, 13)),  # 14
    ((22, 5, 87, 1, 88), (24, 5, 41, 5, 42), (30, 5, 24, 7, 25), (24, 11, 12, 7, 13)),  # 15
    ((24, 5, 98, 1, 99), (28, 7, 45, 3, 46), (24, 15, 19, 2, 20), (30, 3, 15, 13, 16)),  # 16
    ((28, 1, 107, 5, 108), (28, 10, 46, 1, 47), (28, 1, 22, 15, 23), (28, 2, 14, 17, 15)),  # 17
    ((30, 5, 120, 1, 121), (26, 9, 43, 4, 44), (28, 17, 22, 1, 23), (28, 2, 14, 19, 15)),  # 18
    ((28, 3, 113, 4, 114), (26, 3, 44, 11, 45), (26, 17, 21, 4, 22), (26, 9, 13, 16, 14)),  # 19
    ((28, 3, 107, 5, 108), (26, 3, 41, 13, 42), (30, 15, 24, 5, 25), (28, 15, 15, 10, 16)),  # 20
    ((28, 4, 116, 4, 117), (26, 17, 42), (28, 17, 22, 6, 23), (30, 19, 16, 6, 17)),  # 21
    ((28, 2, 111, 7, 112), (28, 17, 46), (30, 7, 24, 16, 25), (24, 34, 13)),  # 22
    ((30, 4, 121, 5, 122), (28, 4, 47, 14, 48), (30, 11, 24, 14, 25), (30, 16, 15, 14, 16)),  # 23
    ((30, 6, 117, 4, 118), (28, 6, 45, 14, 46), (30, 11, 24, 16, 25), (30, 30, 16, 2, 17)),  # 24
    ((26, 8, 106, 4, 107), (28, 8, 47, 13, 48), (30, 7, 24, 22, 25), (30, 22, 15, 13, 16)),  # 25
    ((28, 10, 114, 2, 115), (28, 19, 46, 4, 47), (28, 28, 22, 6, 23), (30, 33, 16, 4, 17)),  # 26
    ((30, 8, 122, 4, 123), (28, 22, 45, 3, 46), (30, 8, 23, 26, 24), (30, 12, 15, 28, 16)),  # 27
    ((30, 3, 117, 10, 118), (28, 3, 45, 23, 46), (30, 4, 24, 31, 25), (30, 11, 15, 31, 16)),  # 28
    ((30, 7, 116, 7, 117), (28, 21, 45, 7, 46), (30, 1, 23, 37, 24), (30, 19, 15, 26, 16)),  # 29
    ((30, 5, 115, 10, 116), (28, 19, 47, 10, 48), (30, 15, 24, 25, 25), (30, 23, 15, 25, 16)),  # 30
    ((30, 13, 115, 3, 116), (28, 2, 46, 29, 47), (30, 42, 24, 1, 25), (30, 23, 15, 28, 16)),  # 31
    ((30, 17, 115), (28, 10, 46, 23, 47), (30, 10, 24, 35, 25), (30, 19, 15, 35, 16)),  # 32
    ((30, 17, 115, 1, 116), (28, 14, 46, 21, 47), (30, 29, 24, 19, 25), (30, 11, 15, 46, 16)),  # 33
    ((30, 13, 115, 6, 116), (28, 14, 46, 23, 47), (30, 44, 24, 7, 25), (30, 59, 16, 1, 17)),  # 34
    ((30, 12, 121, 7, 122), (28, 12, 47, 26, 48), (30, 39, 24, 14, 25), (30, 22, 15, 41, 16)),  # 35
    ((30, 6, 121, 14, 122), (28, 6, 47, 34, 48), (30, 46, 24, 10, 25), (30, 2, 15, 64, 16)),  # 36
    ((30, 17, 122, 4, 123), (28, 29, 46, 14, 47), (30, 49, 24, 10, 25), (30, 24, 15, 46, 16)),  # 37
    ((30, 4, 122, 18, 123), (28, 13, 46, 32, 47), (30, 48, 24, 14, 25), (30, 42, 15, 32, 16)),  # 38
    ((30, 20, 117, 4, 118), (28, 40, 47, 7, 48), (30, 43, 24, 22, 25), (30, 10, 15, 67, 16)),  # 39
    ((30, 19, 118, 6, 119), (28, 18, 47, 31, 48), (30, 34, 24, 34, 25), (30, 20, 15, 61, 16)),  # 40
)

# Footnote of Table 9: these small symbols keep p codewords for misdecode protection,
# i.e. they promise to correct only (EC - p) / 2 errors. A decoder that uses them for
# correction reads more, and reads wrong more often.
_MISDECODE_P = {(1, "L"): 3, (1, "M"): 2, (1, "Q"): 1, (1, "H"): 1, (2, "L"): 2, (3, "L"): 1}

_FORMAT_MASK = 0x5412


def _bch(value: int, data_bits: int, poly: int) -> int:
    """Append the remainder of value * x^k mod poly (k = degree of poly): a BCH codeword."""
    k = poly.bit_length() - 1
    rem = value << k
    for shift in range(data_bits - 1, -1, -1):
        if rem & (1 << (shift + k)):
            rem ^= poly << shift
    return (value << k) | rem


# All 32 valid format words (after the XOR mask), keyed to (level, mask).
FORMAT_WORDS: dict[int, tuple[str, int]] = {
    _bch((LEVEL_BITS[lv] << 3) | mask, 5, 0x537) ^ _FORMAT_MASK: (lv, mask) for lv in LEVELS for mask in range(8)
}
# All valid version words for versions 7..40 (18 bits, Golay-like BCH(18,6)).
VERSION_WORDS: dict[int, int] = {_bch(v, 6, 0x1F25): v for v in range(7, 41)}


def size(version: int) -> int:
    return 4 * version + 17


@lru_cache(maxsize=None)
def alignment_centres(version: int) -> tuple[int, ...]:
    """Row/column coordinates of alignment pattern centres: evenly spaced from the far side,
    with an even step, first one always at 6 (the standard's Annex E table follows this)."""
    if version == 1:
        return ()
    n = version // 7 + 2
    last = size(version) - 7
    step = 26 if version == 32 else (version * 4 + n * 2 + 1) // (n * 2 - 2) * 2
    return tuple([6] + [last - i * step for i in range(n - 2, -1, -1)])


@lru_cache(maxsize=None)
def function_mask(version: int) -> np.ndarray:
    """True on finder/separator, timing, alignment, format and version modules and the dark
    module: the modules that carry no data and are not masked."""
    n = size(version)
    f = np.zeros((n, n), bool)
    f[:9, :9] = True  # top-left finder + separator + format
    f[:9, n - 8 :] = True  # top-right finder + separator + format
    f[n - 8 :, :9] = True  # bottom-left finder + separator + format + dark module
    f[6, :] = True
    f[:, 6] = True
    centres = alignment_centres(version)
    for r in centres:
        for c in centres:
            if (r == 6 and c == 6) or (r == 6 and c == centres[-1]) or (r == centres[-1] and c == 6):
                continue  # would overlap a finder
            f[r - 2 : r + 3, c - 2 : c + 3] = True
    if version >= 7:
        f[: 6, n - 11 : n - 8] = True
        f[n - 11 : n - 8, : 6] = True
    f.setflags(write=False)
    return f


@lru_cache(maxsize=None)
def data_coords(version: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the data modules in the order bits are placed: two-module-wide
    columns from the right, alternately upwards and downwards, skipping the timing column."""
    n = size(version)
    func = function_mask(version)
    rows, cols = [], []
    right = n - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        for vert in range(n):
            y = n - 1 - vert if upward else vert
            for j in range(2):
                x = right - j
                if not func[y, x]:
                    rows.append(y)
                    cols.append(x)
        right -= 2
    r, c = np.array(rows, np.intp), np.array(cols, np.intp)
    r.setflags(write=False)
    c.setflags(write=False)
    return r, c


def raw_data_modules(version: int) -> int:
    """Data + EC modules, including remainder bits (closed form, as in Nayuki's generator)."""
    result = (16 * version + 128) * version + 64
    if version >= 2:
        n = version // 7 + 2
        result -= (25 * n - 10) * n - 55
        if version >= 7:
            result -= 36
    return result


def total_codewords(version: int) -> int:
    return raw_data_modules(version) // 8


@lru_cache(maxsize=None)
def blocks(version: int, level: str) -> list[tuple[int, int]]:
    """(data codewords, EC codewords) for each block, group 1 first (the order of interleaving)."""
    row = _EC_TABLE[version - 1][LEVELS.index(level)]
    ec = row[0]
    out = [(row[2], ec)] * row[1]
    if len(row) > 3:
        out += [(row[4], ec)] * row[3]
    return out


def data_codewords(version: int, level: str) -> int:
    return sum(d for d, _ in blocks(version, level))


def ec_codewords(version: int, level: str) -> int:
    return sum(e for _, e in blocks(version, level))


@lru_cache(maxsize=None)
def interleave_index(version: int, level: str) -> tuple[np.ndarray, ...]:
    """For each block, the positions of its codewords (data then EC) in the symbol's
    codeword stream: data codewords are interleaved column-wise over the blocks (shorter
    blocks sit out the last column), then EC codewords likewise."""
    bl = blocks(version, level)
    pos: list[list[int]] = [[] for _ in bl]
    k = 0
    for i in range(max(d for d, _ in bl)):
        for b, (d, _) in enumerate(bl):
            if i < d:
                pos[b].append(k)
                k += 1
    ec = bl[0][1]
    for i in range(ec):
        for b in range(len(bl)):
            pos[b].append(k)
            k += 1
    return tuple(np.array(p, np.intp) for p in pos)


def misdecode_p(version: int, level: str) -> int:
    return _MISDECODE_P.get((version, level), 0)


def char_count_bits(mode: int, version: int) -> int:
    """Length of the character count indicator for a mode (numeric 1, alnum 2, byte 4, kanji 8)."""
    idx = 0 if version <= 9 else 1 if version <= 26 else 2
    return {1: (10, 12, 14), 2: (9, 11, 13), 4: (8, 16, 16), 8: (8, 10, 12), 13: (8, 10, 12)}[mode][idx]
