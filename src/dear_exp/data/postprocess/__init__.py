"""Test-time post-processing, seeded per image.

A setting is an ordered list of ops (`conf/postprocess/<preset>.yaml`: `settings: {name: [op, ...]}`),
applied to the decoded RGB image before the detector's own preprocessing. Every random parameter is
drawn from `np.random.default_rng(item_seed(seed, key, position, op))`: the global seed, the image's
path relative to its benchmark root (`key`), the op's position in the chain and its name. A setting
therefore gives the same pixels on any machine and in any file-listing order. Each op draws all its
parameters first (`Op.params`), so the output size is known from the header before any pixel is
touched (`Chain.plan`; evaluation batches images of one size together).

A numeric parameter is either fixed or a `[low, high]` range drawn per image: integers uniformly in
`low..high` inclusive (`rng.integers(low, high + 1)`), floats uniformly (`rng.uniform(low, high)`).

Ops and the exact library calls (`img` is a PIL RGB image, `arr = np.array(img)`):

- `jpeg` (`quality` 1-100; `backend: pil` default, or `cv2`).
  pil: `img.save(buf, format="JPEG", quality=q)`, decoded by `Image.open(buf).convert("RGB")`
  (Pillow's defaults: 4:2:0 subsampling, baseline), the `pil_jpg` of CNNDetection/AIGCDB/SIDB/UFD.
  cv2: `cv2.imencode(".jpg", arr[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])`, decoded by
  `cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]` (RGB -> BGR -> RGB), CNNDetection's `cv2_jpg`.
- `webp` (`quality` 1-100): `img.save(buf, format="WEBP", quality=q)` (lossy, Pillow's defaults),
  decoded by PIL.
- `resize`: exactly one of `factor` (> 0; sides `round(w * f)`, or `int(w * f)` with
  `rounding: floor`), `short_side` (the shorter side becomes it, the longer one keeps the aspect
  ratio, rounded likewise; `rounding: floor` is torchvision's `Resize(int)`) or `size: [w, h]`.
  `interpolation` (default bicubic) and `backend`:
  pil (default): `img.resize((w, h), Image.Resampling.<NEAREST|BILINEAR|BICUBIC|LANCZOS|BOX|HAMMING>)`;
  Pillow's filters widen their support when downscaling, so it is always antialiased (this is also
  what torchvision's `Resize` does to a PIL image).
  cv2: `cv2.resize(arr, (w, h), interpolation=cv2.INTER_<NEAREST|LINEAR|CUBIC|LANCZOS4|AREA>)`
  (names nearest, bilinear, bicubic, lanczos, area); no antialiasing except `area`.
  torch: `torchvision.transforms.functional.resize(chw_uint8, [h, w], interpolation=InterpolationMode.
  <NEAREST|BILINEAR|BICUBIC>, antialias=antialias)` (`antialias` default true; only this backend takes it).
- `blur` (Gaussian, float `sigma` >= 0; `backend: scipy` default, or `pil`).
  scipy: `scipy.ndimage.gaussian_filter(arr[:, :, c], output=arr[:, :, c], sigma=s)` for c = 0, 1, 2
  (mode reflect, truncate 4.0, result written into the uint8 array), as AIGCDB, SIDB, UFD and
  CNNDetection call it; sigma 0 leaves the image unchanged.
  pil: `img.filter(ImageFilter.GaussianBlur(radius=s))` (Pillow's radius is the standard deviation;
  extended box filters approximating a Gaussian).
- `noise` (Gaussian, `std` >= 0 in pixel units of 0-255): a per-image seed is drawn with the other
  parameters, then `np.clip(np.rint(arr + np.random.default_rng(seed).normal(0, std, arr.shape)), 0, 255)`.
- `brightness`, `contrast`, `sharpness`, `color` (`factor` >= 0, 1 = unchanged):
  `ImageEnhance.<Brightness|Contrast|Sharpness|Color>(img).enhance(f)`.
- `crop` (square; `size` fixed or a range for the side, clamped to the shorter side; `mode: center`
  default, with torchvision CenterCrop's offsets `int(round((w - s) / 2))`, or `random`, the corner
  drawn uniformly): `img.crop((x, y, x + s, y + s))`.
- `dear_processed`: DEAR's `test_processed` (its `scripts/processed_data_gen/process_test_data.py`,
  after AlignedForensics issue #9), in the reference's order: JPEG quality `randint(50, 95)`; a fair
  coin between an up-scale factor `U(1, min(1024/W, 1024/H))` and a down-scale factor
  `U(max(256/W, 256/H), 1)` (drawn as Python's `random.uniform`, `a + (b - a) * u`, so a reversed
  interval works the same way); new sides `int(W * f)`, `int(H * f)`, each clamped to [256, 1024];
  `img.resize((w, h), Image.Resampling.BICUBIC)` (Pillow's default filter for `img.resize((w, h))`);
  `ImageEnhance.Brightness`, `.Contrast`, `.Sharpness`, `.Color`, each `enhance(U(0.8, 1.2))`, in that
  order; then saved as JPEG by PIL at the drawn quality. Parameters `quality`, `side`, `enhance`
  default to those numbers. One difference, on purpose: the reference draws from a single
  `random.seed(42)` stream per folder, so an image's parameters depend on the listing order of its
  folder (`iterdir`, unsorted); here they are drawn per image from its own seed, so they cannot.
- `corvi_social`: Corvi et al. 2023's "social network" operations (GRIP's `random_operations.py`):
  square crop side `randint(max(m * 5 // 8, 160), m)` with `m = min(W, H, 2048)` (the lower bound is
  clamped to `m` when the image is smaller than 160 px; the reference refuses such images), corner
  `randint(0, W - side)`, `randint(0, H - side)`; `resize((200, 200), LANCZOS if side > 200 else
  BICUBIC)` (PIL's ANTIALIAS and CUBIC); JPEG (PIL) quality `randint(65, 100)`. Parameters `crop`,
  `crop_ratio`, `size`, `quality` default to those numbers.

`jpeg`, `webp`, `dear_processed` and `corvi_social` encode: when one ends a chain, `Chain.process`
also returns the exact bytes it wrote (`task=export` writes them as they are, never re-encoded).

Modules: `ops` (the pure image operations above), `specs` (each op's parameters, their checks and
per-image draws; `OP_CLASSES`, `parse_chain`), `chain` (`Chain`). Everything is importable from here.
`presets` holds `Retired`, the `_target_` of a retired preset (`conf/postprocess/resize_sweep.yaml`): the
schema check builds it and stops the run with one line naming the replacements. It is not imported here.
"""

from dear_exp.data.postprocess.chain import Chain
from dear_exp.data.postprocess.ops import (
    CV2_INTERPOLATION,
    INTERPOLATION,
    RESAMPLE,
    TORCH_INTERPOLATION,
    Size,
)
from dear_exp.data.postprocess.specs import (
    OP_CLASSES,
    OPS,
    Blur,
    Brightness,
    Color,
    Contrast,
    CorviSocial,
    Crop,
    DearProcessed,
    Enhance,
    Jpeg,
    Noise,
    Op,
    Params,
    Resize,
    Sharpness,
    Webp,
    parse_chain,
)

__all__ = [
    "CV2_INTERPOLATION",
    "INTERPOLATION",
    "OPS",
    "OP_CLASSES",
    "RESAMPLE",
    "TORCH_INTERPOLATION",
    "Blur",
    "Brightness",
    "Chain",
    "Color",
    "Contrast",
    "CorviSocial",
    "Crop",
    "DearProcessed",
    "Enhance",
    "Jpeg",
    "Noise",
    "Op",
    "Params",
    "Resize",
    "Sharpness",
    "Size",
    "Webp",
    "parse_chain",
]
