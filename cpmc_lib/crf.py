"""The one dense CRF of the library (Krähenbühl & Koltun, 2011) through ``pydensecrf``.

The energy of a labelling is a unary term, the negative log of the given class probabilities,
plus two Potts pairwise terms that pull pixels towards the label of nearby pixels:

.. math:: k(i, j) = w_g \\exp\\Big(-\\frac{|p_i - p_j|^2}{2\\theta_g^2}\\Big)
          + w_b \\exp\\Big(-\\frac{|p_i - p_j|^2}{2\\theta_\\alpha^2}
          - \\frac{|I_i - I_j|^2}{2\\theta_\\beta^2}\\Big)

(Gaussian: ``gaussian_sxy`` = θ_g, ``gaussian_compat`` = w_g; bilateral: ``bilateral_sxy`` =
θ_α, ``bilateral_srgb`` = θ_β, ``bilateral_compat`` = w_b). Every parameter comes from
:class:`~cpmc_lib.config.CrfConfig`; nothing is hidden here. The spatial widths scale with the
image size when ``size_ref`` is set (see :func:`kernel_params`).

Many images are processed in a pool of ``workers`` processes by :func:`parallel_map`
(pydensecrf holds the GIL, so threads would not help).

Example:
    >>> import numpy as np
    >>> from cpmc_lib.config import CrfConfig
    >>> img = np.zeros((8, 8, 3), np.uint8)
    >>> probs = np.full((2, 8, 8), 0.5, np.float32)
    >>> dense_crf(img, probs, CrfConfig()).shape
    (2, 8, 8)
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from .config import CrfConfig
from .progress import tqdm

__all__ = ["crf_labels", "crf_map", "dense_crf", "kernel_params", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


def kernel_params(cfg: CrfConfig, size: tuple[int, int]) -> dict[str, float]:
    """The kernel widths used for an image of ``size`` = (H, W).

    With ``cfg.size_ref`` > 0 the spatial widths are multiplied by ``max(H, W) / size_ref``
    (a VOC image, long side 500, gets IRN's values exactly); the colour width and the weights
    do not depend on the size.

    Returns:
        dict with ``gaussian_sxy``, ``bilateral_sxy``, ``bilateral_srgb``.
    """
    f = max(size) / cfg.size_ref if cfg.size_ref > 0 else 1.0
    return {
        "gaussian_sxy": cfg.gaussian_sxy * f,
        "bilateral_sxy": cfg.bilateral_sxy * f,
        "bilateral_srgb": cfg.bilateral_srgb,
    }


def dense_crf(img: np.ndarray, probs: np.ndarray, cfg: CrfConfig) -> np.ndarray:
    """Mean-field inference of a fully connected CRF.

    Args:
        img: (H, W, 3) uint8 RGB image.
        probs: (k, H, W) class probabilities (each pixel sums to 1; clipped at 1e-5 before the log).
        cfg: kernel parameters and iteration count.

    Returns:
        (k, H, W) float32 posterior marginals (``iterations: 0`` returns the clipped ``probs``,
        renormalised).
    """
    # pydensecrf wants a writable C-ordered buffer; arrays from PIL are read-only.
    img = np.require(img, np.uint8, ["C", "W"])
    probs = np.asarray(probs, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3 or probs.ndim != 3 or probs.shape[1:] != img.shape[:2]:
        raise ValueError(
            f"need img (H, W, 3) and probs (k, H, W) of the same H, W; got {img.shape}, {probs.shape}"
        )
    k, h, w = probs.shape
    p = kernel_params(cfg, (h, w))
    d = dcrf.DenseCRF2D(w, h, k)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=cfg.gaussian_compat)
    d.addPairwiseBilateral(
        sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"], rgbim=img, compat=cfg.bilateral_compat
    )
    q = d.inference(cfg.iterations)
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)


def crf_labels(
    img: np.ndarray, probs: np.ndarray, cfg: CrfConfig, keys: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Label map after the CRF: argmax of :func:`dense_crf`.

    Args:
        img: (H, W, 3) uint8 image.
        probs: (k, H, W) class probabilities.
        keys: (k,) class id of each channel (e.g. ``[0, *present classes]``); None = channel index.

    Returns:
        (H, W) int64 class ids.
    """
    idx = dense_crf(img, probs, cfg).argmax(0)
    return idx if keys is None else np.asarray(keys, dtype=np.int64)[idx]


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    total: int | None = None,
    progress: bool = True,
    desc: str = "dense CRF",
) -> Iterator[R]:
    """``map(fn, items)`` over a process pool, in order, with a tqdm bar.

    At most ``4 * workers`` items are in flight, so a lazy ``items`` (images loaded one by one)
    never sits in memory whole. ``fn`` must be picklable (a module-level function or a
    ``functools.partial`` of one). Workers are *spawned*, so a script that ends up here needs
    the usual ``if __name__ == "__main__":`` guard (notebooks and ``python -m cpmc_lib`` do not).

    Args:
        workers: processes; 0 or 1 runs ``fn`` in this process.
        total: number of items, for the bar.
    """
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    try:
        if workers <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        # spawn: forked children of a process holding torch's thread pools can deadlock.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            pending: collections.deque = collections.deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
                    bar.update()
            while pending:
                yield pending.popleft().result()
                bar.update()
    finally:
        bar.close()


def _crf_pair(pair: tuple[np.ndarray, np.ndarray], cfg: CrfConfig) -> np.ndarray:
    return dense_crf(pair[0], pair[1], cfg)


def crf_map(
    items: Iterable[tuple[np.ndarray, np.ndarray, Any]],
    cfg: CrfConfig,
    total: int | None = None,
    progress: bool = True,
    desc: str = "dense CRF",
) -> Iterator[tuple[np.ndarray, Any]]:
    """:func:`dense_crf` over many images in ``cfg.workers`` processes, in order.

    Args:
        items: ``(img, probs, tag)`` triples; only ``img`` and ``probs`` go to the workers, the
            ``tag`` (an image name, its ground truth, ...) stays here and comes back with the result.

    Yields:
        ``(posterior (k, H, W), tag)`` in the order of ``items``.

    Example:
        >>> for post, name in crf_map(zip(imgs, probs, names), CrfConfig(workers=2)):  # doctest: +SKIP
        ...     labels[name] = post.argmax(0)
    """
    tags: collections.deque = collections.deque()

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for img, probs, tag in items:
            tags.append(tag)  # parallel_map takes an item before it yields that item's result
            yield img, probs

    worker = functools.partial(_crf_pair, cfg=cfg)
    for post in parallel_map(worker, pairs(), cfg.workers, total, progress, desc):
        yield post, tags.popleft()
