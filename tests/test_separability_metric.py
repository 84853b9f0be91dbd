"""ClassSeparability: closed-form values on constructed point clouds, streaming, DDP sync, errors."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glassbox.metrics import ClassSeparability


def plus_cloud(center: tuple[float, float], r: float) -> torch.Tensor:
    """Four points at distance r from ``center`` (a '+' shape): centroid = center, RMS radius = r."""
    c = torch.tensor(center, dtype=torch.float64)
    offsets = torch.tensor([[r, 0.0], [-r, 0.0], [0.0, r], [0.0, -r]], dtype=torch.float64)
    return c + offsets


def two_clusters(d: float = 10.0, r: float = 1.0):
    x = torch.cat([plus_cloud((0.0, 0.0), r), plus_cloud((d, 0.0), r)])
    y = torch.tensor([0] * 4 + [1] * 4)
    return x, y


def compute(x, y, num_classes=2, **kw):
    m = ClassSeparability(num_classes, **kw)
    m.update(x, y)
    return {k: float(v) for k, v in m.compute().items()}


# ------------------------------------------------------------------ closed form
def test_well_separated_clusters_closed_form():
    d, r = 10.0, 1.0
    x, y = two_clusters(d, r)
    out = compute(x, y)
    # intra = r; inter = d; ratio = d/r; trace S_B = 2·4·(d/2)² = 2d², trace S_W = 8r² → d²/(4r²)
    assert out["intra"] == pytest.approx(r, abs=1e-12)
    assert out["inter"] == pytest.approx(d, abs=1e-12)
    assert out["ratio"] == pytest.approx(d / r, abs=1e-12)
    assert out["fisher"] == pytest.approx(d**2 / (4 * r**2), abs=1e-12)


def test_identical_clusters_have_zero_separation():
    x = torch.cat([plus_cloud((3.0, -2.0), 2.0)] * 2)
    y = torch.tensor([0] * 4 + [1] * 4)
    out = compute(x, y)
    assert out["intra"] == pytest.approx(2.0, abs=1e-12)
    assert out["inter"] == pytest.approx(0.0, abs=1e-12)
    assert out["ratio"] == pytest.approx(0.0, abs=1e-12)
    assert out["fisher"] == pytest.approx(0.0, abs=1e-12)


def test_three_classes_unequal_sizes_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    sizes = (5, 9, 14)
    x = torch.cat(
        [
            torch.randn(n, 6, generator=g, dtype=torch.float64) * (k + 1) + 3 * k
            for k, n in enumerate(sizes)
        ]
    )
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    out = compute(x, y, num_classes=4)  # class 3 never occurs: ignored
    mus = torch.stack([x[y == k].mean(0) for k in range(3)])
    radii = [((x[y == k] - mus[k]).pow(2).sum(1).mean()).sqrt() for k in range(3)]
    intra = sum(radii) / 3
    inter = ((mus[0] - mus[1]).norm() + (mus[0] - mus[2]).norm() + (mus[1] - mus[2]).norm()) / 3
    sw = sum((x[y == k] - mus[k]).pow(2).sum() for k in range(3))
    sb = sum(n * (mus[k] - x.mean(0)).pow(2).sum() for k, n in enumerate(sizes))
    assert out["intra"] == pytest.approx(float(intra), rel=1e-12)
    assert out["inter"] == pytest.approx(float(inter), rel=1e-12)
    assert out["ratio"] == pytest.approx(float(inter / intra), rel=1e-12)
    assert out["fisher"] == pytest.approx(float(sb / sw), rel=1e-12)


def test_tight_classes_give_defined_inf_and_nan():
    # every class a single point: intra = 0 → ratio, fisher = inf; all points equal → nan
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    out = compute(x, torch.tensor([0, 0, 1]))
    assert out["intra"] == 0.0 and out["inter"] == pytest.approx(5.0)
    assert math.isinf(out["ratio"]) and math.isinf(out["fisher"])
    same = compute(torch.ones(4, 3), torch.tensor([0, 0, 1, 1]))
    assert math.isnan(same["ratio"]) and math.isnan(same["fisher"])


def test_large_offset_keeps_precision():
    # float64 state: an offset 1e5 times the spread still leaves ~6 correct digits
    # (the relative error of the within-class scatter grows like 1e-16 · (offset / spread)²)
    x, y = two_clusters(d=0.5, r=0.01)
    out = compute(x + 1e3, y)
    assert out["intra"] == pytest.approx(0.01, rel=1e-5)
    assert out["inter"] == pytest.approx(0.5, rel=1e-9)
    assert out["fisher"] == pytest.approx(0.5**2 / (4 * 0.01**2), rel=1e-5)


# ------------------------------------------------------------------ streaming and sync
def _random_data(n=60, d=(3, 4, 2), k=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *d, generator=g) + torch.randint(0, 3, (n, 1, 1, 1), generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def test_streaming_equals_one_shot():
    x, y = _random_data()
    one = ClassSeparability(4)
    one.update(x, y)
    streamed = ClassSeparability(4)
    for xb, yb in zip(x.split(7), y.split(7)):
        streamed.update(xb, yb)
    a, b = one.compute(), streamed.compute()
    for key in a:
        assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-12)


def test_forward_returns_batch_value_and_accumulates():
    x, y = _random_data()
    m = ClassSeparability(4)
    first = m(x[:30], y[:30])
    m(x[30:], y[30:])
    ref = ClassSeparability(4)
    ref.update(x[:30], y[:30])
    assert float(first["fisher"]) == pytest.approx(float(ref.compute()["fisher"]), rel=1e-12)
    ref.update(x[30:], y[30:])
    assert float(m.compute()["fisher"]) == pytest.approx(float(ref.compute()["fisher"]), rel=1e-12)


def test_merge_state_equals_one_shot_with_a_lazily_sized_empty_part():
    x, y = _random_data()
    a, b, empty = ClassSeparability(4), ClassSeparability(4), ClassSeparability(4)
    a.update(x[:25], y[:25])
    b.update(x[25:], y[25:])
    a.merge_state(b)
    a.merge_state(empty)  # never updated: its (K, 0) state must merge as zeros
    empty.merge_state(a)  # and the other way round
    ref = ClassSeparability(4)
    ref.update(x, y)
    for m in (a, empty):
        assert float(m.compute()["ratio"]) == pytest.approx(
            float(ref.compute()["ratio"]), rel=1e-12
        )


def test_state_is_small_and_reset_clears_it():
    x, y = _random_data(n=500)
    m = ClassSeparability(4)
    m.update(x, y)
    assert m.sums.shape == (4, 24) and m.counts.shape == (4,) and m.sumsq.shape == (4,)
    m.reset()
    assert m.sums.shape == (4, 0) and float(m.counts.sum()) == 0
    m.update(x.reshape(500, -1)[:, :5], y)  # a new size after reset is fine
    assert m.sums.shape == (4, 5)


def test_accepts_geometric_tensor_like_objects():
    class Wrapped:  # e2cnn's GeometricTensor exposes the data as .tensor
        def __init__(self, t):
            self.tensor = t

    x, y = two_clusters()
    assert compute(Wrapped(x.reshape(8, 2, 1, 1)), y)["fisher"] == pytest.approx(25.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_gather(metric: ClassSeparability, other: ClassSeparability):
    """A two-rank all-gather as torchmetrics calls it: this rank's tensor, then the other's."""

    def gather(t, group=None):
        if t is metric.sums and other.sums.shape[1] == 0:
            return [
                t,
                torch.zeros_like(t),
            ]  # the other rank sized its empty state in its own size exchange
        for name in ("counts", "sums", "sumsq"):
            if t is getattr(metric, name):
                return [t, getattr(other, name)]
        return [t, torch.tensor([other.sums.shape[1]])]  # the size exchange of a lazy state

    return gather


@pytest.mark.parametrize("empty_rank", [None, 0, 1])
def test_sync_sums_the_ranks_also_when_one_saw_no_data(empty_rank):
    x, y = _random_data()
    ranks = [ClassSeparability(4), ClassSeparability(4)]
    for r, m in enumerate(ranks):
        if empty_rank is None:
            m.update(x[r::2], y[r::2])
        elif r != empty_rank:
            m.update(x, y)
    ref = compute(x, y, num_classes=4)
    # each rank gathers from the other's pre-sync state
    states = [{k: getattr(m, k).clone() for k in ("counts", "sums", "sumsq")} for m in ranks]
    for r, m in enumerate(ranks):
        other = ClassSeparability(4)
        for k, v in states[1 - r].items():
            setattr(other, k, v)
        m._sync_dist(dist_sync_fn=_fake_gather(m, other))
        assert m.sums.shape == (4, 24)
        for key, value in ref.items():
            assert float(m.compute()[key]) == pytest.approx(value, rel=1e-12)


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        x, y = _random_data()
        split, lazy = ClassSeparability(4), ClassSeparability(4)
        split.update(x[rank::world], y[rank::world])
        if rank == 0:  # rank 1 never updates `lazy`: its state stays (K, 0)
            lazy.update(x, y)
        queue.put((rank, [{k: float(v) for k, v in m.compute().items()} for m in (split, lazy)]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_sync_equals_one_shot_over_gloo():
    """Two real processes (gloo): split data, and one rank without any data."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_ddp_worker, args=(2, _free_port(), queue), nprocs=2, join=True)
    results = dict(queue.get(timeout=60) for _ in range(2))
    x, y = _random_data()
    ref = compute(x, y, num_classes=4)
    for rank in (0, 1):
        for synced in results[rank]:
            for key, value in ref.items():
                assert synced[key] == pytest.approx(value, rel=1e-12)


# ------------------------------------------------------------------ bad input
def test_single_class_is_a_clear_error():
    m = ClassSeparability(3)
    m.update(torch.randn(5, 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="at least two classes"):
        m.compute()


@pytest.mark.parametrize("num_classes", [1, 0])
def test_fewer_than_two_classes_at_construction(num_classes):
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ClassSeparability(num_classes)


@pytest.mark.parametrize("shape", [(5,), ()])
def test_features_that_do_not_flatten_to_2d(shape):
    m = ClassSeparability(2)
    with pytest.raises(ValueError, match="flatten to 2-D"):
        m.update(torch.randn(shape), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (torch.zeros(4), TypeError, "integer class indices"),
        (torch.zeros(3, dtype=torch.long), ValueError, r"shape \(4,\)"),
        (torch.tensor([0, 1, 2, 5]), ValueError, r"\[0, 3\)"),
        (torch.tensor([0, -1, 1, 1]), ValueError, r"\[0, 3\)"),
    ],
)
def test_bad_labels(labels, error, match):
    with pytest.raises(error, match=match):
        ClassSeparability(3).update(torch.randn(4, 2), labels)


def test_feature_size_change_and_non_tensor_input():
    m = ClassSeparability(2)
    m.update(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="one ClassSeparability per layer"):
        m.update(torch.randn(4, 5), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m.update([[1.0, 2.0]], torch.tensor([0]))
    with pytest.raises(TypeError, match="real numbers"):
        m.update(torch.randn(2, 3, dtype=torch.complex64), torch.tensor([0, 1]))
