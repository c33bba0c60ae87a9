"""Benchmark layouts on tiny generated trees: labels, pairing, counts, keys, order, errors."""

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import get_object, instantiate
from PIL import Image

from dear_exp.__main__ import CONF_DIR
from dear_exp.data import benchmarks as B
from dear_exp.data.benchmarks import BenchmarkIndex, load_index
from dear_exp.data.folders import FAKE, REAL
from dear_exp.errors import DearError

BENCHMARKS = sorted(p.stem for p in (Path(CONF_DIR) / "benchmark").glob("*.yaml"))
DEAR_FAKES = {
    "sd": "sd",
    "midjourney": "Midjourney",
    "kandinsky": "kandinsky",
    "playground": "playground",
    "pixart": "pixelart",
    "lcm": "lcm",
    "flux": "flux",
    "wuerstchen": "wuerstchen",
    "amused": "amused",
    "chameleon": "Chameleon",
    "wildrf": "WildRF",
    "loki": "loki",
}


def make_tree(root: Path, folders: dict[str, int], seed: int = 0, fmt: str = "PNG") -> list[Path]:
    """`n` 16x16 images in each folder, written in a shuffled order; returns the files."""
    rng = random.Random(seed)
    files = [
        root / folder / f"img{i:02d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        for folder, n in folders.items()
        for i in range(n)
    ]
    rng.shuffle(files)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path, format=fmt)
    for folder, n in folders.items():
        if n == 0:
            (root / folder).mkdir(parents=True, exist_ok=True)
    return files


def counts(index: BenchmarkIndex) -> dict[str, int]:
    return {name: len(samples) for name, samples in index.sources.items()}


def check_labels_and_keys(index: BenchmarkIndex) -> None:
    """Reals 0, fakes 1, keys relative to the root and sorted, each key naming its own file."""
    for name, samples in index.sources.items():
        assert {s.label for s in samples} == {REAL if index.is_real(name) else FAKE}, name
        keys = [s.key for s in samples]
        assert keys == sorted(keys), name
        for s in samples:
            assert (index.root / s.key).resolve() == s.path.resolve() and not Path(s.key).is_absolute()


def test_dear_layout_pairs_every_generator_and_wild_set_with_redcaps(compose_cfg, tmp_path: Path):
    cfg = compose_cfg("benchmark=dear")
    root = Path(cfg.benchmark.root)
    make_tree(root, {"real/redcaps": 3, **{f"fake/{folder}": 2 for folder in DEAR_FAKES.values()}})
    (root / "fake/flux/extra.png").write_bytes((root / "fake/flux/img00.png").read_bytes())
    index = load_index(cfg.benchmark)
    assert set(index.subsets) == set(DEAR_FAKES)
    assert all(spec == {"real": "redcaps", "fake_source": name} for name, spec in index.subsets.items())
    assert index.groups == {
        "generators": ["sd", "midjourney", "kandinsky", "playground", "pixart", "lcm", "flux", "wuerstchen", "amused"],
        "wild": ["chameleon", "wildrf", "loki"],
    }
    assert counts(index) == {"redcaps": 3, **{k: 3 if k == "flux" else 2 for k in DEAR_FAKES}}
    for name, folder in DEAR_FAKES.items():
        assert all(s.key.startswith(f"fake/{folder}/") for s in index.sources[name])
    assert [s.key for s in index.sources["redcaps"]] == [f"real/redcaps/img{i:02d}.png" for i in range(3)]
    check_labels_and_keys(index)


def test_demo_and_dear_flux_configs_keep_their_subsets(compose_cfg, tiny_demo: Path):
    cfg = compose_cfg("benchmark=demo", "demo.scale=tiny", root=tiny_demo)
    index = load_index(cfg.benchmark)
    assert index.subsets == {g: {"real": "photos", "fake_source": g} for g in ("gen_a", "gen_b", "gen_c")}
    assert index.groups == {"all": ["gen_a", "gen_b", "gen_c"]}
    flux = instantiate(compose_cfg("benchmark=dear_flux").benchmark.layout, _convert_="all")
    assert isinstance(flux, B.FolderPairs) and flux.subsets == {"flux": {"fake": "fake/flux", "real": "redcaps"}}


@pytest.mark.parametrize("option", BENCHMARKS)
def test_every_benchmark_config_instantiates_a_registered_layout(compose_cfg, option):
    cfg = compose_cfg(f"benchmark={option}")
    assert cfg.benchmark.name == option and cfg.benchmark.batch_size > 0 and cfg.benchmark.source_hint
    layout = instantiate(cfg.benchmark.layout, _convert_="all")
    assert type(layout) is get_object(cfg.benchmark.layout._target_) and type(layout) in B.LAYOUTS.values()


def test_every_registered_layout_has_a_config_and_a_module_of_its_name(compose_cfg):
    named = {get_object(compose_cfg(f"benchmark={option}").benchmark.layout._target_) for option in BENCHMARKS}
    assert named <= set(B.LAYOUTS.values()), named - set(B.LAYOUTS.values())
    missing = set(B.LAYOUTS) - {cls.name for cls in named}
    assert not missing, f"registered layouts that no conf/benchmark yaml names: {sorted(missing)}"
    for name, cls in B.LAYOUTS.items():
        assert cls.name == name and cls.__module__ == f"dear_exp.data.benchmarks.{name}"
        assert getattr(B, cls.__name__) is cls  # the yaml's _target_: dear_exp.data.benchmarks.<ClassName>
    with pytest.raises(KeyError, match="no benchmark layout 'nope'; registered: folder_pairs, forensynths"):
        B.layout_class("nope")
    assert B.layout_class("wildrf") is B.WildRF


def test_forensynths_with_and_without_the_category_level(tmp_path: Path):
    make_tree(
        tmp_path,
        {
            "progan/cat/0_real": 2,
            "progan/cat/1_fake": 3,
            "progan/airplane/0_real": 1,
            "progan/airplane/1_fake": 2,
            "biggan/0_real": 4,
            "biggan/1_fake": 1,
        },
    )
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "progan/cat/1_fake/._img00.png").write_bytes(b"AppleDouble, not an image")
    index = B.ForenSynths().index("fs", tmp_path)
    assert list(index.subsets) == ["biggan", "progan"]
    assert index.subsets["progan"] == {"real": "progan/real", "fake_source": "progan"}
    assert counts(index) == {"biggan/real": 4, "biggan": 1, "progan/real": 3, "progan": 5}
    assert [s.key for s in index.sources["progan/real"]] == [
        "progan/airplane/0_real/img00.png",
        "progan/cat/0_real/img00.png",
        "progan/cat/0_real/img01.png",
    ]
    check_labels_and_keys(index)
    only = B.ForenSynths(subsets=["progan"]).index("fs", tmp_path)
    assert list(only.subsets) == ["progan"] and only.groups == {"all": ["progan"]}
    (tmp_path / "stylegan/cat").mkdir(parents=True)
    with pytest.raises(DearError, match=r"stylegan has neither 0_real/ and 1_fake/ nor <category>"):
        B.ForenSynths().index("fs", tmp_path, "get it")


def test_order_does_not_depend_on_file_creation_order(tmp_path: Path):
    spec = {"g/0_real": 6, "g/1_fake": 6, "g/1_fake/sub": 3}
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one, spec, seed=1)
    make_tree(two, spec, seed=2)
    a, b = B.ForenSynths().index("x", one), B.ForenSynths().index("x", two)

    def keys(index):
        return {k: [s.key for s in v] for k, v in index.sources.items()}

    assert keys(a) == keys(b)
    assert [s.key for s in a.sources["g"]][-3:] == [
        "g/1_fake/sub/img00.png",
        "g/1_fake/sub/img01.png",
        "g/1_fake/sub/img02.png",
    ]


def test_genimage_labels_nature_real_and_ai_fake_and_finds_archive_folders(tmp_path: Path):
    make_tree(
        tmp_path,
        {
            "VQDM/imagenet_ai_0419_vqdm/val/ai": 3,
            "VQDM/imagenet_ai_0419_vqdm/val/nature": 2,
            "VQDM/imagenet_ai_0419_vqdm/train/ai": 5,
            "ADM/val/ai": 1,
            "ADM/val/nature": 4,
        },
    )
    layout = B.GenImage(generators={"vqdm": "VQDM", "adm": "ADM"})
    index = layout.index("genimage", tmp_path)
    assert index.subsets == {
        "vqdm": {"real": "vqdm/real", "fake_source": "vqdm"},
        "adm": {"real": "adm/real", "fake_source": "adm"},
    }
    assert counts(index) == {"vqdm/real": 2, "vqdm": 3, "adm/real": 4, "adm": 1}
    assert all("/val/nature/" in s.key and s.label == REAL for s in index.sources["vqdm/real"])
    assert all("/val/ai/" in s.key and s.label == FAKE for s in index.sources["vqdm"])
    check_labels_and_keys(index)
    flat = B.GenImage(generators={"vqdm": "VQDM/imagenet_ai_0419_vqdm"}).index("g", tmp_path)
    assert counts(flat) == {"vqdm/real": 2, "vqdm": 3}
    make_tree(tmp_path, {"VQDM/copy/val/ai": 1, "VQDM/copy/val/nature": 1})
    with pytest.raises(DearError, match="found 2 sub-folders"):
        layout.index("genimage", tmp_path)


def test_ufd_pairs_guided_with_imagenet_and_the_rest_with_laion(tmp_path: Path):
    d = "diffusion_datasets"
    make_tree(
        tmp_path,
        {
            f"{d}/laion/0_real": 4,
            f"{d}/imagenet/0_real": 3,
            f"{d}/guided/1_fake": 3,
            f"{d}/ldm_200/1_fake": 4,
            f"{d}/dalle/1_fake": 2,
            "test/progan/cat/0_real": 1,
            "test/progan/cat/1_fake": 1,
        },
    )
    layout = B.UFDDiffusion(generators=["dalle", "ldm_200", "guided"])
    index = layout.index("ufd", tmp_path)
    assert {k: v["real"] for k, v in index.subsets.items()} == {
        "dalle": "laion",
        "ldm_200": "laion",
        "guided": "imagenet",
    }
    assert counts(index) == {"laion": 4, "dalle": 2, "ldm_200": 4, "imagenet": 3, "guided": 3}
    assert index.sources["imagenet"][0].key == f"{d}/imagenet/0_real/img00.png"
    assert index.groups == {"all": ["dalle", "ldm_200", "guided"]}
    check_labels_and_keys(index)
    both = B.UFDDiffusion(generators=["dalle", "guided"], forensynths="test").index("ufd", tmp_path)
    assert both.groups == {"diffusion": ["dalle", "guided"], "forensynths": ["progan"]}
    assert both.subsets["progan"] == {"real": "progan/real", "fake_source": "progan"}
    with pytest.raises(DearError, match=f"data folder not found: {tmp_path}/{d}/glide_100_10/1_fake; hint"):
        B.UFDDiffusion().index("ufd", tmp_path, "hint")


def test_synthbuster_scores_every_generator_against_raise(tmp_path: Path):
    root = tmp_path / "synthbuster"
    make_tree(root, {"real_RAISE_1k": 5, "dalle3": 2, "firefly": 3, "midjourney-v5": 1})
    index = B.Synthbuster().index("sb", root)
    assert index.subsets == {g: {"real": "raise", "fake_source": g} for g in ("dalle3", "firefly", "midjourney-v5")}
    assert counts(index) == {"raise": 5, "dalle3": 2, "firefly": 3, "midjourney-v5": 1}
    check_labels_and_keys(index)
    (root / "real_RAISE_1k").rename(tmp_path / "RAISE")
    beside = B.Synthbuster(generators=["firefly"], real="../RAISE").index("sb", root)
    assert beside.sources["raise"][0].key == "../RAISE/img00.png"
    check_labels_and_keys(beside)


def test_wildrf_pairs_each_platform_with_its_own_reals(tmp_path: Path):
    make_tree(
        tmp_path,
        {
            "test/reddit/0_real": 2,
            "test/reddit/1_fake": 3,
            "test/twitter/0_real": 4,
            "test/twitter/1_fake": 1,
            "test/facebook/0_real": 1,
            "test/facebook/1_fake": 2,
            "train/0_real": 3,
            "train/1_fake": 3,
        },
    )
    index = B.WildRF().index("wildrf", tmp_path)
    assert index.subsets == {p: {"real": f"{p}/real", "fake_source": p} for p in ("reddit", "twitter", "facebook")}
    assert counts(index) == {
        "reddit/real": 2,
        "reddit": 3,
        "twitter/real": 4,
        "twitter": 1,
        "facebook/real": 1,
        "facebook": 2,
    }
    assert all(s.key.startswith("test/twitter/0_real/") for s in index.sources["twitter/real"])
    check_labels_and_keys(index)


def _manifest_tree(tmp_path: Path) -> Path:
    make_tree(tmp_path / "data", {"real": 3, "fake": 4, "other": 2})
    return tmp_path / "data"


def test_manifest_csv_one_shared_real_set_and_per_generator_reals(tmp_path: Path):
    data = _manifest_tree(tmp_path)
    (data / "list.csv").write_text(
        "path,label,generator\n"
        "fake/img01.png,1,sdxl\nreal/img02.png,real,\nfake/img00.png,FAKE,sdxl\n"
        "real/img00.png,0,\nfake/img02.png,1,flux\nother/img00.png,0,flux\n"
    )
    index = B.Manifest(file="data/list.csv").index("m", tmp_path)
    assert index.subsets == {
        "flux": {"real": "flux/real", "fake_source": "flux"},
        "sdxl": {"real": "real", "fake_source": "sdxl"},
    }
    assert [s.key for s in index.sources["sdxl"]] == ["data/fake/img00.png", "data/fake/img01.png"]
    assert [s.key for s in index.sources["real"]] == ["data/real/img00.png", "data/real/img02.png"]
    assert counts(index) == {"flux/real": 1, "flux": 1, "real": 2, "sdxl": 2}
    check_labels_and_keys(index)


def test_manifest_json_relative_to_root_with_explicit_pairs(tmp_path: Path):
    data = _manifest_tree(tmp_path)
    rows = [
        {"path": "data/real/img00.png", "label": 0, "generator": "laion"},
        {"path": "data/other/img01.png", "label": "real", "generator": "imagenet"},
        {"path": "data/fake/img03.png", "label": 1, "generator": "guided"},
        {"path": "data/fake/img02.png", "label": 1, "generator": "ldm"},
    ]
    (data / "lists").mkdir()
    (data / "lists/m.json").write_text(json.dumps(rows))
    layout = B.Manifest(
        file=str(data / "lists/m.json"), relative_to="root", pairs={"guided": "imagenet", "ldm": "laion"}
    )
    index = layout.index("m", tmp_path)
    assert {k: v["real"] for k, v in index.subsets.items()} == {"guided": "imagenet", "ldm": "laion"}
    check_labels_and_keys(index)
    with pytest.raises(DearError, match="generator 'guided' has no real set 'real' to pair with"):
        B.Manifest(file="data/lists/m.json", relative_to="root").index("m", tmp_path)
    with pytest.raises(DearError, match=re.escape("real set(s) ['laion'] pair with no generator")):
        B.Manifest(file="data/lists/m.json", relative_to="root", pairs={"guided": "imagenet", "ldm": "imagenet"}).index(
            "m", tmp_path
        )


def test_manifest_errors_are_one_line(tmp_path: Path):
    data = _manifest_tree(tmp_path)
    (data / "bad.csv").write_text("path,label\nreal/img00.png,maybe\n")
    (data / "gone.csv").write_text("path,label\nreal/img00.png,0\nfake/nope.png,1\n")
    for file, fragment in (
        ("bad.csv", "row 1: needs a path and a label 0/1 or real/fake"),
        ("gone.csv", f"1 listed file(s) not found, e.g. {data}/fake/nope.png"),
        ("none.csv", f"manifest not found: {data}/none.csv"),
    ):
        with pytest.raises(DearError, match=re.escape(fragment)) as err:
            B.Manifest(file=file).index("m", data)
        assert "\n" not in str(err.value)


def test_missing_folder_is_one_line_with_the_path_and_the_hint(compose_cfg, tmp_path: Path):
    cfg = compose_cfg("benchmark=dear")
    root = Path(cfg.benchmark.root)
    make_tree(root, {"real/redcaps": 1, **{f"fake/{f}": 1 for f in DEAR_FAKES.values() if f != "loki"}})
    with pytest.raises(DearError) as err:
        load_index(cfg.benchmark)
    message = str(err.value)
    assert message.startswith(f"data folder not found: {root}/fake/loki; get the LDMFakeDetect test set")
    assert "\n" not in message
    (root / "fake/loki").mkdir()
    with pytest.raises(DearError, match=f"no images in {root}/fake/loki; get the LDMFakeDetect"):
        load_index(cfg.benchmark)
    assert len(load_index(cfg.benchmark, allow_empty=True).sources["loki"]) == 0


def test_bad_configs_fail_clearly(tmp_path: Path):
    make_tree(tmp_path, {"r": 1, "f": 1})
    with pytest.raises(DearError, match="pairs with real set 'nope'"):
        B.FolderPairs(reals={"r": "r"}, subsets={"f": {"fake": "f", "real": "nope"}}).index("b", tmp_path)
    with pytest.raises(DearError, match="names both a real set and a fake subset"):
        B.FolderPairs(reals={"x": "r"}, subsets={"x": {"fake": "f", "real": "x"}}).index("b", tmp_path)
    with pytest.raises(DearError, match="group 'g' names"):
        B.FolderPairs(reals={"r": "r"}, subsets={"f": {"fake": "f", "real": "r"}}, groups={"g": ["zz"]}).index(
            "b", tmp_path
        )


def test_datamodule_reads_each_source_once_per_setting(tmp_path: Path):
    from dear_exp.data.datamodules import BenchmarkDataModule
    from dear_exp.data.images import Preprocess

    make_tree(tmp_path, {"test/a/0_real": 2, "test/a/1_fake": 3, "test/b/0_real": 1, "test/b/1_fake": 1})
    index = B.WildRF(platforms=["a", "b"]).index("w", tmp_path)
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3)
    dm = BenchmarkDataModule(
        index, {"clean": [], "jpeg": [{"op": "jpeg", "quality": 75}]}, pre, batch_size=2, num_workers=0
    )
    dm.setup("predict")
    assert dm.name == "w" and dm.subsets == index.subsets and dm.groups == {"all": ["a", "b"]}
    assert [(s.source, s.setting, s.is_real) for s in dm.sources] == [
        (src, setting, src.endswith("/real")) for setting in ("clean", "jpeg") for src in ("a/real", "a", "b/real", "b")
    ]
    assert [len(d) for d in dm.datasets] == [2, 3, 1, 1] * 2
    assert len(dm.predict_dataloader()) == 8
    _, label, _ = dm.datasets[1][0]
    assert float(label) == 1.0
