"""The demo world's cues, by construction: which differences between its real and fake images a
detector can learn, and which of them post-processing erases. The demo is a controlled experiment
because these are known:

(a) `real_jpeg`: a real-side shortcut. Real photos (training, validation and test) are JPEG files at
    quality 70-95, fakes are PNG: "JPEG traces mean real". JPEG or WebP re-compression puts such
    traces on the fakes too, and halving the size wipes the 8x8 block grid off the reals, so the cue
    stops telling real from fake after post-processing.
(b) `fingerprint/<generator>`: each generator's own decoder traces (checkerboards of a transposed
    conv, nearest-neighbour blocks, a period-2 pattern, pixel-shuffle phases: `generators.py`).
    They live at the highest spatial frequencies, which JPEG/WebP quantise away and resizing
    resamples; the unseen generators' fingerprints differ from the seen one's.
(c) `shared`: the shared texture every generator and the inpainter add last
    (`generators.shared_tile`): periods 6 and 12 px, luminance only, the same for seen and unseen
    generators; it survives JPEG, WebP and resizing to half size. A detector that used it alone
    would be robust and would generalise to the unseen generators.

`cue_probes` builds probe images that carry one cue alone: the same real crops (from the test
columns of the photos), left clean, or given exactly one cue. The difference of a channel's response
between a probe and its clean crop says how much that cue drives the channel (`dear_exp.cues`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dear_exp.demo.generators import (
    GENERATORS,
    INPAINTER,
    SHARED_TEXTURE_AMPLITUDE,
    add_shared_texture,
    run_fingerprint,
    to_uint8,
)
from dear_exp.demo.photos import item_rng, sample_crop

# Real photos are JPEG at a quality drawn per image in this inclusive range (cue (a)).
JPEG_QUALITY = (70, 95)


def jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.array(im.convert("RGB"))


@dataclass(frozen=True)
class Cue:
    letter: str  # the and README's name: a, b or c
    description: str
    spurious: bool  # erased by post-processing (a shortcut) rather than a robust artefact
    # (clean RGB uint8, the item's rng, the world's shared-texture amplitude) -> the probe
    apply: Callable[[np.ndarray, np.random.Generator, float], np.ndarray]


def _fingerprint(name: str) -> Callable[[np.ndarray, np.random.Generator, float], np.ndarray]:
    return lambda crop, rng, texture: to_uint8(run_fingerprint(name, crop.astype(np.float32)))


CUES: dict[str, Cue] = {
    "real_jpeg": Cue(
        "a",
        "real-side shortcut: real photos are JPEG (quality 70-95), fakes PNG; erased by re-compression and resizing",
        True,
        lambda crop, rng, texture: jpeg_roundtrip(crop, jpeg_quality(rng)),
    ),
    **{
        f"fingerprint/{g}": Cue(
            "b",
            f"{g}'s own decoder traces (highest spatial frequencies); erased by JPEG, WebP and resizing",
            True,
            _fingerprint(g),
        )
        for g in GENERATORS + (INPAINTER,)
    },
    "shared": Cue(
        "c",
        "shared texture every generator adds (periods 6 and 12 px, luminance); survives JPEG, WebP and resizing",
        False,
        lambda crop, rng, texture: to_uint8(add_shared_texture(crop.astype(np.float32), texture)),
    ),
}


def cue_probes(
    n: int, seed: int, size: int = 96, texture: float = SHARED_TEXTURE_AMPLITUDE
) -> dict[str, list[np.ndarray]]:
    """The probe sets, "clean" and one per cue, each of n RGB uint8 images; item i of every set is the
    same test-column crop (paired), so per-item differences isolate the cue. `texture`: the world's
    shared-texture amplitude (`demo.texture`), which the `shared` probes carry; at 0 the world has no
    cue (c) and there is no `shared` set."""
    if n < 2:
        raise ValueError(f"cue probes need at least 2 images per cue, got {n}")
    present = {name: cue for name, cue in CUES.items() if name != "shared" or texture > 0}  # texture 0: no cue (c)
    out: dict[str, list[np.ndarray]] = {"clean": [], **{name: [] for name in present}}
    for i in range(n):
        rng = item_rng(seed, "probe", "clean", i)
        crop = sample_crop(rng, "test", size)
        out["clean"].append(crop)
        for name, cue in present.items():
            out[name].append(cue.apply(crop, item_rng(seed, "probe", name, i), texture))
    return out
