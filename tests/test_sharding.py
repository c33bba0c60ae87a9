"""Rank sharding without padding, and the K-view rows of the cached refit: every item once, on
every number of ranks, in the batches of a single process."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from dear_exp.data.datasets import EvalImages, LabelledImages
from dear_exp.data.folders import Sample
from dear_exp.data.samplers import SeededSampler, ShardedBatches, SizeBucketBatchSampler
from dear_exp.data.seeding import item_seed
from dear_exp.features import StackedBatches
from dear_exp.refit.adam import FeatureRefitDataModule, ViewSampler
from dear_exp.refit.rows import Views

WORLDS = (1, 2, 3)
SIZES = [(32, 32), (48, 32), (32, 48)]


def _sizes(n: int) -> list[tuple[int, int]]:
    """n images of three sizes, interleaved unevenly (buckets of different lengths)."""
    return [SIZES[(i * i + i // 3) % 3] for i in range(n)]


class FakeEval(EvalImages):
    """An evaluation set that is only its sizes (StackedBatches never reads images)."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def final_sizes(self) -> list[tuple[int, int]]:
        return list(self.sizes)


def _fake_views(n_images: int, views: int) -> Views:
    samples = [Sample(Path(f"/nowhere/{i}.png"), i % 2, f"{i}.png") for i in range(n_images)]
    return Views(LabelledImages(samples, None, None, seed=0), views, seed=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- size buckets


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("n", range(18))
def test_size_buckets_give_every_index_to_exactly_one_rank(n: int, world: int):
    sizes = _sizes(n)
    single = SizeBucketBatchSampler(sizes, 4).batches
    per_rank = [list(SizeBucketBatchSampler(sizes, 4, rank, world)) for rank in range(world)]
    assert Counter(i for batches in per_rank for b in batches for i in b) == Counter(range(n))
    for rank, batches in enumerate(per_rank):
        assert batches == single[rank::world]  # whole single-process batches, round robin
        assert len(batches) == len(SizeBucketBatchSampler(sizes, 4, rank, world))
    for b in single:
        assert 1 <= len(b) <= 4 and len({sizes[i] for i in b}) == 1


# ---------------------------------------------------------------------------------------------- global batches


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("n", range(18))
def test_sharded_batches_slice_the_single_process_batches(n: int, world: int):
    single = list(ShardedBatches(ViewSampler(n, 1, seed=3) if n else range(0), 4))
    assert sorted(i for b in single for i in b) == list(range(n))
    per_rank = [
        list(ShardedBatches(ViewSampler(n, 1, seed=3) if n else range(0), 4, rank, world)) for rank in range(world)
    ]
    for rank, batches in enumerate(per_rank):
        assert len(batches) == len(single) == -(-n // 4)  # the same number of steps on every rank
        assert len(ShardedBatches(range(n), 4, rank, world)) == len(single)
    for k, global_batch in enumerate(single):
        slices = [per_rank[rank][k] for rank in range(world)]
        assert [i for s in slices for i in s] == global_batch  # contiguous slices, in rank order
        assert max(map(len, slices)) - min(map(len, slices)) <= 1  # as even as possible


def test_sharded_batches_follow_the_samplers_epoch_on_every_rank():
    samplers = [SeededSampler(10, seed=1) for _ in range(2)]
    shards = [ShardedBatches(s, 4, rank, 2) for rank, s in enumerate(samplers)]
    for epoch in (0, 1):
        for shard in shards:
            shard.sampler.set_epoch(epoch)
        items = [x for shard in shards for b in shard for x in b]
        assert sorted(i for i, _ in items) == list(range(10))
        assert len({seed for _, seed in items}) == 10
    first = [x for b in ShardedBatches(SeededSampler(10, seed=1), 4) for x in b]
    assert [i for i, _ in first] != [i for i, _ in items]  # epoch 1 is another order than epoch 0
    with pytest.raises(ValueError, match="batch_size=0"):
        ShardedBatches(range(3), 0)


# ---------------------------------------------------------------------------------------------- stacked extraction


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize(("n_eval", "n_images", "views"), [(0, 1, 1), (1, 0, 2), (7, 3, 2), (13, 5, 3)])
def test_stacked_batches_cover_every_item_of_every_data_set_once(world, n_eval, n_images, views):
    datasets = [FakeEval(_sizes(n_eval)), _fake_views(n_images, views)]
    lengths = [n_eval, n_images * views]
    single = StackedBatches(datasets, 4).batches
    per_rank = [StackedBatches(datasets, 4, rank, world).batches for rank in range(world)]
    covered = Counter()
    for rank, batches in enumerate(per_rank):
        if rank < len(single):
            assert batches == single[rank::world]
            covered.update(x for b in batches for x in b)
        else:  # fewer batches than ranks: this rank re-scores batch 0, dropped at the gather
            assert batches == single[:1] and len(batches) == 1
    assert covered == Counter((d, i) for d, n in enumerate(lengths) for i in range(n))
    eval_sizes = datasets[0].final_sizes()
    for b in single:
        assert 1 <= len(b) <= 4 and len({d for d, _ in b}) == 1  # a batch never mixes data sets
        assert b[0][0] == 1 or len({eval_sizes[i] for _, i in b}) == 1  # nor sizes


def test_a_rank_without_its_own_batch_gets_batch_0():
    datasets = [FakeEval([(32, 32)] * 3), FakeEval([(48, 32)] * 2)]
    assert [StackedBatches(datasets, 4, rank, 3).batches for rank in range(3)] == [
        [[(0, 0), (0, 1), (0, 2)]],
        [[(1, 0), (1, 1)]],
        [[(0, 0), (0, 1), (0, 2)]],
    ]


# ---------------------------------------------------------------------------------------------- view sampler


def test_view_sampler_is_seeded_and_a_permutation_of_images_per_epoch():
    n, k = 11, 4
    a = list(ViewSampler(n, k, seed=5))
    assert a == list(ViewSampler(n, k, seed=5)) and a != list(ViewSampler(n, k, seed=6))
    assert sorted(j % n for j in a) == list(range(n)) and all(0 <= j < n * k for j in a)
    assert len({j // n for j in a}) > 1  # each image starts at its own view offset
    sampler = ViewSampler(n, k, seed=5)
    sampler.set_epoch(1)
    b = list(sampler)
    assert sorted(j % n for j in b) == list(range(n))
    assert [j % n for j in b] != [j % n for j in a]  # shuffled anew
    assert all((jb // n - ja // n) % k == 1 for ja in a for jb in b if ja % n == jb % n)  # next view


@pytest.mark.parametrize("start", [0, 3])
def test_every_view_of_every_image_once_in_k_consecutive_epochs(start: int):
    n, k = 9, 3
    sampler = ViewSampler(n, k, seed=2)
    rows = []
    for epoch in range(start, start + k):
        sampler.set_epoch(epoch)
        rows += list(sampler)
    assert Counter(rows) == Counter(range(n * k))  # row j = view j // n of image j % n


def test_more_samples_than_images_cycle_through_fresh_rounds_and_views():
    n, k = 5, 4
    sampler = ViewSampler(n, k, seed=0, num_samples=2 * n)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        rows = list(sampler)
        assert len(rows) == len(sampler) == 2 * n
        assert sorted(j % n for j in rows[:n]) == sorted(j % n for j in rows[n:]) == list(range(n))
        epochs += rows
    assert Counter(epochs) == Counter(range(n * k))  # two rounds per epoch: all K views in K / 2 epochs
    short = list(ViewSampler(n, k, seed=0, num_samples=n + 2))
    assert len(short) == n + 2 and sorted(j % n for j in short[:n]) == list(range(n))


# ---------------------------------------------------------------------------------------------- views


@pytest.fixture
def demo_train(compose_cfg, tiny_demo):
    from dear_exp import build
    from dear_exp.detectors import preprocess_of

    cfg = compose_cfg("+experiment=demo", "demo.scale=tiny", "num_workers=0", root=tiny_demo)
    data = build.train_data(cfg, preprocess_of(cfg.detector), cfg.augment, 8)
    data.setup("fit")
    return data.train_set


def test_views_row_j_is_view_j_div_n_of_image_j_mod_n(demo_train):
    n, k, seed = len(demo_train), 3, 7
    views = Views(demo_train, k, seed)
    assert len(views) == n * k
    for j in (1, n + 1, 2 * n + 1, n - 1):
        x, label, row = views[j]
        i, view = j % n, j // n
        expected = demo_train[(i, item_seed(seed, "view", view, demo_train.samples[i].key))][0]
        assert torch.equal(x, expected) and int(row) == j
        assert float(label) == demo_train.samples[i].label
    again = views[n + 1][0]
    views[2 * n + 1]  # reading other rows in between changes nothing
    assert torch.equal(views[n + 1][0], again)
    assert torch.equal(Views(demo_train, k, seed)[n + 1][0], again)
    assert not torch.equal(views[1][0], views[n + 1][0])  # view 0 and view 1 of one image
    assert not torch.equal(views[n + 1][0], views[2 * n + 1][0])
    assert not torch.equal(Views(demo_train, k, seed + 1)[n + 1][0], again)


# ---------------------------------------------------------------------------------------------- cached refit data


def _rows(n_rows: int, offset: float, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """pooled[:, 0] identifies the row (offset + row id)."""
    return {"pooled": torch.stack([torch.arange(n_rows) + offset, torch.zeros(n_rows)], 1), "label": labels}


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")  # Lightning's own CombinedLoader
def test_feature_refit_loaders_pair_main_and_inpaint_batches_and_cover_val_once():
    n_train, n_inpaint, k = 10, 4, 3
    train = _rows(n_train * k, 0.0, (torch.arange(n_train * k) % n_train % 2).float())
    inpaint = _rows(n_inpaint * k, 1000.0, torch.ones(n_inpaint * k))
    val = _rows(7, 500.0, torch.zeros(7))
    data = FeatureRefitDataModule(train, inpaint, val, views=k, batch_size=4, inpaint_batch_size=3, seed=0)

    loader = data.train_dataloader()
    steps = [batch for batch, _, _ in iter(loader)]
    assert len(steps) == -(-n_train // 4) == 3  # one step per main batch
    main_rows, inpaint_rows = [], []
    for batch in steps:
        assert set(batch) == {"main", "inpaint"}
        (x, y), (xi, yi) = batch["main"], batch["inpaint"]
        assert x.shape[1] == 2 and len(x) == len(y) and len(xi) == len(yi) == 3
        assert torch.equal(y, train["label"][x[:, 0].long()])  # features and labels stay paired
        main_rows += x[:, 0].long().tolist()
        inpaint_rows += (xi[:, 0] - 1000).long().tolist()
    assert sorted(r % n_train for r in main_rows) == list(range(n_train))  # each image once per epoch
    assert all(0 <= r < n_inpaint * k for r in inpaint_rows) and len(inpaint_rows) == 9
    assert set(r % n_inpaint for r in inpaint_rows) == set(range(n_inpaint))

    val_rows = [int(r) - 500 for x, _ in data.val_dataloader() for r in x[:, 0]]
    assert val_rows == list(range(7))
