"""A miniature, offline stand-in for the DEAR data sets, built on first use.

It exists so that a newcomer can run the whole pipeline on a laptop CPU in
minutes without downloading anything. It is a toy, not a benchmark: a handful
of scikit-image sample photographs and four hand-made "generators"; numbers
measured on it say nothing about real detectors on real data.

It reproduces the situation the DEAR paper studies, as a controlled experiment:
its cues are known by construction (`cues`). (a) Real photos are JPEG files,
fakes PNG: "JPEG traces mean real", a shortcut that post-processing erases.
(b) Each generator's upsampling decoder leaves weak, generator-specific local
pixel correlations (the traces NPR keys on), which JPEG, WebP and resizing
erase. (c) Every generator, seen and unseen, and the inpainter add the same
faint texture, which survives them. A detector trained on it can learn (a) and
(b) rather than (c), so its accuracy on fakes collapses once the fakes are JPEG
re-compressed; `dear_exp.cues` measures which cue drives each channel.

A given (scale, seed) builds byte-identical files every time: each item draws
from its own sha256-seeded generator, and the generators use element-wise
float32 numpy only (no BLAS, no thread-dependent reductions) before PIL's
deterministic encoders. Other Pillow / libjpeg versions may encode differently.

Modules: `photos` (the bundled photographs and seeded crops), `generators` (the miniature
generators and the inpainter), `cues` (the world's cues and the probes that carry one each),
`writer` (the files of a build, `ensure_demo_data`).
"""

from dear_exp.demo.generators import GENERATORS
from dear_exp.demo.writer import SCALES, ensure_demo_data

__all__ = ["SCALES", "GENERATORS", "ensure_demo_data"]
