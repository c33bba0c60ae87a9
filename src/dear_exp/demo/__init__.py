"""A miniature, offline stand-in for the DEAR data sets, built on first use.

It exists so that a newcomer can run the whole pipeline on a laptop CPU in
minutes without downloading anything. It is a toy, not a benchmark: a handful
of scikit-image sample photographs and four hand-made "generators"; numbers
measured on it say nothing about real detectors on real data.

It reproduces the situation the DEAR paper studies. Real training photos are
JPEG files (format bias) while fakes are PNG files from generators whose
upsampling decoders leave weak, generator-specific local pixel correlations
(the traces NPR keys on). A detector trained on it can learn "JPEG traces mean
real", so its accuracy on fakes collapses once the fakes are JPEG re-compressed.

A given (scale, seed) builds byte-identical files every time: each item draws
from its own sha256-seeded generator, and the generators use element-wise
float32 numpy only (no BLAS, no thread-dependent reductions) before PIL's
deterministic encoders. Other Pillow / libjpeg versions may encode differently.

Modules: `photos` (the bundled photographs and seeded crops), `generators` (the miniature
generators and the inpainter), `writer` (the files of a build, `ensure_demo_data`).
"""

from dear_exp.demo.generators import GENERATORS
from dear_exp.demo.writer import SCALES, ensure_demo_data

__all__ = ["SCALES", "GENERATORS", "ensure_demo_data"]
