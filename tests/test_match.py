"""`ferbench.data.match.same_images`: the same faces up to re-encoding noise, nothing else.

Every answer is checked against a brute-force root-mean-square distance computed
here in exact integer arithmetic, on sets built to sit on both sides of the tolerance.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ferbench.data.match import TOLERANCE, same_images

# --- helpers the other match tests (test_realnoise.py) share --------------------------------

def smooth_faces(n: int, seed: int = 0, side: int = 48) -> np.ndarray:
    """n smooth grey "faces" [n, side, side] uint8: a random 6x6 grid upsampled bilinearly,
    plus a distinct offset per face. JPEG at quality 90 moves them by about 1 grey level
    RMS; two distinct faces differ by far more than the tolerance (about 25 or more)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        grid = rng.integers(30, 226, (6, 6)).astype(np.uint8)
        face = np.asarray(Image.fromarray(grid).resize((side, side), Image.BILINEAR), np.int64)
        out[i] = np.clip(face + (i % 7) * 3 - 9, 0, 255)
    return out


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"))


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a.astype(np.float64) - b) ** 2).mean()))


def brute_force(query, pool, tolerance, exclude_self=False) -> list[list[int]]:
    """Pool indices within `tolerance` RMS of each query image, in exact integers:
    sum of squared differences <= tolerance² · pixels."""
    q = query.reshape(len(query), -1).astype(np.int64)
    p = pool.reshape(len(pool), -1).astype(np.int64)
    limit = tolerance ** 2 * q.shape[1]
    out = []
    for i in range(len(q)):
        d = ((p - q[i]) ** 2).sum(axis=1)
        out.append([j for j in np.flatnonzero(d <= limit).tolist()
                    if not (exclude_self and j == i)])
    return out


def as_lists(result) -> list[list[int]]:
    assert all(r.dtype == np.int64 for r in result)
    return [sorted(r.tolist()) for r in result]


def _four_squares(r: int) -> list[int]:
    """Four integers whose squares sum to r (Lagrange), by search: r is small here."""
    top = int(np.sqrt(r)) + 1
    for a in range(top):
        for b in range(a, top):
            for c in range(b, top):
                rest = r - a * a - b * b - c * c
                if rest < 0:
                    break
                e = round(np.sqrt(rest))
                if e * e == rest:
                    return [a, b, c, e]
    raise AssertionError(r)


def shifted_by(base: np.ndarray, sum_sq: int, rng) -> np.ndarray:
    """`base` plus integer differences (random signs) whose squares sum exactly to `sum_sq`,
    spread over every pixel (d or d+1 on all but four, which make up the rest)."""
    flat = base.reshape(-1).astype(np.int64)
    n = flat.size - 4
    d = int(np.sqrt(sum_sq / n))
    diff = np.full(flat.size, d, np.int64)
    left = sum_sq - d * d * n
    k = left // (2 * d + 1)
    diff[:k] = d + 1
    diff[n:] = _four_squares(int(left - k * (2 * d + 1)))
    assert int((diff ** 2).sum()) == sum_sq
    out = flat + rng.choice([-1, 1], flat.size) * diff
    assert out.min() >= 0 and out.max() <= 255
    return out.reshape(base.shape).astype(np.uint8)


def near_duplicate_sets(shape, seed=0):
    """(query, pool) of mid-grey random images and variants at chosen exact distances,
    among them ones exactly at, just below and just above the tolerances tested."""
    rng = np.random.default_rng(seed)
    pixels = int(np.prod(shape))
    bases = rng.integers(40, 216, (5, *shape)).astype(np.uint8)
    images = list(bases)
    for tol in (1.0, 2.5, 4.0):
        at = int(tol * tol * pixels)  # tol² · pixels is an integer for these shapes
        for sum_sq in (at - 1, at, at + 1):
            images.append(shifted_by(bases[0], sum_sq, rng))
    for sum_sq in (1, 5 * pixels, 9 * pixels, 100 * pixels):
        images.append(shifted_by(bases[1], sum_sq, rng))
    images.append(bases[2].copy())  # an exact copy
    images = np.stack(images)
    order = rng.permutation(len(images))
    pool = images[order]
    strangers = rng.integers(40, 216, (2, *shape)).astype(np.uint8)  # in no pool
    query = np.concatenate([pool[::2], strangers])
    return query, pool


# --- equal to brute force --------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 16), (8, 8), (24, 20), (16, 16, 3)],
                         ids=["16x16", "8x8-no-blocks", "24x20", "16x16-rgb"])
@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.5, 4.0, 8.0])
def test_same_images_equals_brute_force_rms(shape, tolerance):
    query, pool = near_duplicate_sets(shape)
    expected = brute_force(query, pool, tolerance)
    assert as_lists(same_images(query, pool, tolerance)) == expected
    # the sets sit on both sides: some queries have company, the two strangers none
    assert expected[-2:] == [[], []]
    assert sum(map(len, expected)) >= len(query) - 2


@pytest.mark.parametrize("tolerance", [1.0, 2.5, 4.0])
def test_faces_just_below_and_just_above_the_tolerance(tolerance):
    rng = np.random.default_rng(7)
    base = rng.integers(40, 216, (1, 16, 16)).astype(np.uint8)
    at = int(tolerance ** 2 * 256)
    pool = np.stack([shifted_by(base[0], s, rng) for s in (at - 1, at, at + 1)])
    assert rms(base[0], pool[0]) < tolerance == rms(base[0], pool[1]) < rms(base[0], pool[2])
    assert as_lists(same_images(base, pool, tolerance)) == [[0, 1]]


def test_size_not_a_multiple_of_the_block_still_finds_every_candidate():
    # 18x18: the 4x4 block means cover only 16x16 of the 324 pixels. Here the faces
    # differ by 3.62 RMS (≤ 4), all of it inside the covered part, where the coarse
    # lower bound must still not exceed its limit.
    a = np.full((1, 18, 18), 100, np.uint8)
    b = a.copy()
    b[0, :16, :16] += 4
    b[0, :4, :4] += 1
    assert rms(a[0], b[0]) == pytest.approx(3.6175, abs=1e-4)
    assert brute_force(a, b, 4.0) == [[0]]
    assert as_lists(same_images(a, b, 4.0)) == [[0]]


@pytest.mark.parametrize("shape", [(18, 18), (20, 17)])
def test_same_images_equals_brute_force_on_sizes_not_a_multiple_of_four(shape):
    query, pool = near_duplicate_sets(shape, seed=3)
    assert as_lists(same_images(query, pool, 4.0)) == brute_force(query, pool, 4.0)


def test_exclude_self_leaves_out_only_the_image_itself():
    faces = smooth_faces(6, seed=1, side=16)
    pool = np.concatenate([faces, faces[:2]])  # 6 and 7 copy 0 and 1
    assert as_lists(same_images(pool, pool)) == [[0, 6], [1, 7], [2], [3], [4], [5], [0, 6],
                                                 [1, 7]]
    assert as_lists(same_images(pool, pool, exclude_self=True)) == [[6], [7], [], [], [], [], [0],
                                                                    [1]]
    assert as_lists(same_images(pool, pool, exclude_self=True)) == \
        brute_force(pool, pool, TOLERANCE, exclude_self=True)


def test_more_queries_than_one_chunk_keep_their_own_indices():
    # 1,100 queries cross the 1,024-query chunk: indices (and exclude_self) stay global.
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 256, (1100, 4, 4)).astype(np.uint8)
    pool[1050] = pool[3]
    pool[1099] = pool[1098]
    got = as_lists(same_images(pool, pool, 0.0, exclude_self=True))
    assert got == brute_force(pool, pool, 0.0, exclude_self=True)
    assert got[3] == [1050] and got[1050] == [3] and got[1098] == [1099] and got[1099] == [1098]
    assert sum(map(len, got)) == 4


def test_rgb_images_match_on_all_three_channels():
    faces = smooth_faces(3, seed=2, side=16)
    rgb = np.stack([faces, faces[::-1], faces], axis=-1)  # [3, 16, 16, 3]
    other = rgb.copy()
    other[..., 1] = rgb[..., 0]  # only the green channel differs
    assert rgb.shape == (3, 16, 16, 3)
    assert as_lists(same_images(rgb, rgb)) == [[0], [1], [2]]
    assert as_lists(same_images(rgb, other)) == [[], [1], []]  # the middle face is symmetric
    assert as_lists(same_images(rgb, other)) == brute_force(rgb, other, TOLERANCE)


# --- what the FER2013 match relies on ----------------------------------------------------------

def test_jpeg_copy_with_noise_matches_but_a_shifted_face_does_not():
    faces = smooth_faces(20, seed=4)
    rng = np.random.default_rng(4)
    noisy = np.clip(faces.astype(np.int64) + rng.integers(-2, 3, faces.shape), 0, 255)
    copies = np.stack([decode(jpeg(f.astype(np.uint8), 75)) for f in noisy])
    shifted = np.roll(faces, 1, axis=2)
    distances = [rms(a, b) for a, b in zip(faces, copies)]
    assert max(distances) < 2.5  # re-encoded, well within the tolerance
    assert min(rms(a, b) for a, b in zip(faces, shifted)) > TOLERANCE
    pool = np.concatenate([copies, shifted])
    assert as_lists(same_images(faces, pool)) == [[i] for i in range(20)]
    assert as_lists(same_images(shifted, copies)) == [[]] * 20


def test_distinct_smooth_faces_are_far_apart():
    faces = smooth_faces(30, seed=0)
    d = [rms(faces[i], faces[j]) for i in range(30) for j in range(i)]
    assert min(d) > 5 * TOLERANCE
    assert as_lists(same_images(faces, faces)) == [[i] for i in range(30)]


# --- edges -------------------------------------------------------------------------------------

def test_empty_query_or_pool():
    faces = smooth_faces(3, side=16)
    none = faces[:0]
    assert same_images(none, faces) == []
    got = same_images(faces, none)
    assert len(got) == 3 and all(r.dtype == np.int64 and r.size == 0 for r in got)
    assert same_images(none, none) == []


@pytest.mark.parametrize("query_shape, pool_shape", [
    ((2, 16, 16), (2, 16, 17)),
    ((2, 16, 16), (2, 16, 16, 3)),
    ((2, 16, 16, 3), (2, 16, 16, 1)),
    ((0, 16, 16), (2, 8, 8)),
])
def test_images_of_different_shapes_are_a_value_error(query_shape, pool_shape):
    with pytest.raises(ValueError, match="image shapes differ"):
        same_images(np.zeros(query_shape, np.uint8), np.zeros(pool_shape, np.uint8))
