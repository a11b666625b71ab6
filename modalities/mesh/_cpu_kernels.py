"""The compiled kernels of the ``cpu`` Gaussian renderer (see :mod:`.render_cpu`).

Imported only when that renderer first runs, so numba is loaded (and the kernels compiled or
read from numba's on-disk cache) only by users of it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from atoken.modalities.mesh.splat import ALPHA_MAX, ALPHA_MIN, T_MIN

__all__ = ["backward", "bin_tiles", "forward"]


@njit(cache=True)
def bin_tiles(mean2d, radius, order, tile, tiles_x, tiles_y):  # pragma: no cover (compiled)
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, np.int64)
    lo = np.zeros((order.shape[0], 4), np.int64)
    for i in range(order.shape[0]):
        g = order[i]
        r = radius[g]
        x0 = max(0, math.floor((mean2d[g, 0] - r) / tile))
        x1 = min(tiles_x - 1, math.floor((mean2d[g, 0] + r) / tile))
        y0 = max(0, math.floor((mean2d[g, 1] - r) / tile))
        y1 = min(tiles_y - 1, math.floor((mean2d[g, 1] + r) / tile))
        lo[i, 0], lo[i, 1], lo[i, 2], lo[i, 3] = x0, x1, y0, y1
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int64)
    for i in range(order.shape[0]):  # in depth order: each tile's list stays sorted
        for ty in range(lo[i, 2], lo[i, 3] + 1):
            for tx in range(lo[i, 0], lo[i, 1] + 1):
                t = ty * tiles_x + tx
                ids[fill[t]] = order[i]
                fill[t] += 1
    return offsets, ids


@njit(parallel=True, cache=True)
def forward(mean2d, conic, opacity, color, bg, offsets, ids, h, w, tile, tiles_x):
    rgb = np.zeros((h, w, 3))
    final_t = np.ones((h, w))
    end = np.zeros((h, w), np.int64)
    for t in prange(offsets.shape[0] - 1):  # pragma: no cover (compiled)
        ty, tx = t // tiles_x, t % tiles_x
        for py in range(ty * tile, min(ty * tile + tile, h)):
            for px in range(tx * tile, min(tx * tile + tile, w)):
                trans = 1.0
                c0 = c1 = c2 = 0.0
                last = offsets[t]
                for k in range(offsets[t], offsets[t + 1]):
                    g = ids[k]
                    dx, dy = px - mean2d[g, 0], py - mean2d[g, 1]
                    power = -0.5 * (conic[g, 0] * dx * dx + conic[g, 2] * dy * dy)
                    power -= conic[g, 1] * dx * dy
                    if power > 0:
                        continue
                    alpha = min(ALPHA_MAX, opacity[g] * math.exp(power))
                    if alpha < ALPHA_MIN:
                        continue
                    test = trans * (1 - alpha)
                    if test < T_MIN:
                        break
                    wgt = alpha * trans
                    c0 += wgt * color[g, 0]
                    c1 += wgt * color[g, 1]
                    c2 += wgt * color[g, 2]
                    trans = test
                    last = k + 1
                rgb[py, px, 0] = c0 + trans * bg[0]
                rgb[py, px, 1] = c1 + trans * bg[1]
                rgb[py, px, 2] = c2 + trans * bg[2]
                final_t[py, px] = trans
                end[py, px] = last
    return rgb, final_t, end


@njit(parallel=True, cache=True)
def backward(
    mean2d, conic, opacity, color, bg, offsets, ids, final_t, end, d_rgb, d_alpha, tile, tx_n
):
    h, w = final_t.shape
    grads = np.zeros((ids.shape[0], 9))
    for t in prange(offsets.shape[0] - 1):  # pragma: no cover (compiled)
        ty, tx = t // tx_n, t % tx_n
        for py in range(ty * tile, min(ty * tile + tile, h)):
            for px in range(tx * tile, min(tx * tile + tile, w)):
                t_end = final_t[py, px]
                trans = t_end
                g0, g1, g2 = d_rgb[py, px, 0], d_rgb[py, px, 1], d_rgb[py, px, 2]
                d_bg = bg[0] * g0 + bg[1] * g1 + bg[2] * g2
                a0 = a1 = a2 = 0.0  # colour of what lies behind, per unit transmittance
                last_alpha = 0.0
                l0 = l1 = l2 = 0.0
                for k in range(end[py, px] - 1, offsets[t] - 1, -1):
                    g = ids[k]
                    dx, dy = px - mean2d[g, 0], py - mean2d[g, 1]
                    ca, cb, cc = conic[g, 0], conic[g, 1], conic[g, 2]
                    power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
                    if power > 0:
                        continue
                    gauss = math.exp(power)
                    raw = opacity[g] * gauss
                    alpha = min(ALPHA_MAX, raw)
                    if alpha < ALPHA_MIN:
                        continue
                    trans = trans / (1 - alpha)  # the transmittance in front of g
                    wgt = alpha * trans
                    grads[k, 6] += wgt * g0
                    grads[k, 7] += wgt * g1
                    grads[k, 8] += wgt * g2
                    a0 = last_alpha * l0 + (1 - last_alpha) * a0
                    a1 = last_alpha * l1 + (1 - last_alpha) * a1
                    a2 = last_alpha * l2 + (1 - last_alpha) * a2
                    last_alpha = alpha
                    l0, l1, l2 = color[g, 0], color[g, 1], color[g, 2]
                    d_a = trans * ((l0 - a0) * g0 + (l1 - a1) * g1 + (l2 - a2) * g2)
                    d_a += (d_alpha[py, px] - d_bg) * t_end / (1 - alpha)
                    if raw >= ALPHA_MAX:
                        continue  # clamped: no gradient to opacity or position
                    grads[k, 5] += gauss * d_a
                    d_power = raw * d_a
                    grads[k, 0] += d_power * (ca * dx + cb * dy)
                    grads[k, 1] += d_power * (cc * dy + cb * dx)
                    grads[k, 2] += d_power * (-0.5 * dx * dx)
                    grads[k, 3] += d_power * (-dx * dy)
                    grads[k, 4] += d_power * (-0.5 * dy * dy)
    return grads
