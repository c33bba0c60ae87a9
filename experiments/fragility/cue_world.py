"""The demo world's cues under postprocess=robust: AUC of each cue's matched statistic (a probe carrying
the cue alone against its clean crop; 0.5 = cannot be told apart), the statistics of
tests/test_demo_cues.py. Run from the project root: .venv/bin/python experiments/fragility/cue_world.py"""

import sys

sys.path.insert(0, ".")
from tests import test_demo_cues as t

rows = [("shared", lambda s: lambda x: t.peak(x, t.shared_freqs(s)))]
rows += [
    (f"fingerprint/{g}", lambda s: lambda x: t.peak(x, t.NYQUIST)) for g in ("gen_a", "gen_b", "gen_c", "inpainter")
]
rows += [("real_jpeg", lambda s: t.blockiness)]
print("| cue | statistic | " + " | ".join(t.SETTINGS) + " |")
for cue, stat in rows:
    name = {"shared": "texture frequencies", "real_jpeg": "block grid"}.get(cue, "Nyquist")
    print(f"| {cue} | {name} | " + " | ".join(f"{t.separation(cue, stat(s), s):.2f}" for s in t.SETTINGS) + " |")
