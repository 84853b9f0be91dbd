"""Sign matrices and the greedy SCSC: constraint, brute-force comparison, backends, errors."""

import itertools

import numpy as np
import pytest
import torch

from glassbox.interpret import (
    InfeasibleDeltaError,
    LinearBoundaries,
    SignMatrix,
    greedy_scsc,
    pack_bits,
    sign_matrix,
    unpack_bits,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def random_instance(rng, n, m, p_side=0.5):
    """Random sides of n images (image 0 is the seed) for m boundaries; random classes."""
    sides = rng.random((n, m)) < p_side
    same = rng.random(n) < 0.5
    same[0] = True
    return sides, same


def coverage_of(sides, seed, subset):
    if len(subset) == 0:
        return np.ones(len(sides), bool)
    return (sides[:, subset] == sides[seed, subset]).all(1)


def brute_force(sides, same, delta):
    """Max covered same-class images over all subsets with at most delta others covered."""
    m = sides.shape[1]
    best = -1
    for r in range(m + 1):
        for subset in itertools.combinations(range(m), r):
            cov = coverage_of(sides, 0, list(subset))
            if (cov & ~same).sum() <= delta:
                best = max(best, int((cov & same).sum()))
    return best


def test_pack_roundtrip():
    rng = np.random.default_rng(0)
    for n in (1, 63, 64, 65, 200):
        mask = rng.random((3, n)) < 0.5
        words = pack_bits(mask)
        assert words.dtype == np.uint64 and words.shape == (3, -(-n // 64))
        assert np.array_equal(unpack_bits(words, n), mask)
    # bit i of word i // 64 is element i
    assert pack_bits(np.eye(1, 70, 66, dtype=bool)[0])[1] == np.uint64(4)


def test_sign_matrix_is_one_gemm_and_packing_agrees():
    torch.manual_seed(0)
    feats = torch.randn(300, 7)
    lb = LinearBoundaries(
        torch.randn(11, 7), torch.randn(11), torch.zeros(11), torch.ones(11), (7,)
    )
    dense = sign_matrix(feats, lb, pack=False, block_rows=64).dense
    assert torch.equal(dense, feats @ lb.weight.T + lb.bias >= 0)
    packed = sign_matrix(feats, lb, pack=True, block_rows=128)
    assert torch.equal(packed.to_dense(), dense)
    assert np.array_equal(packed.row(5), dense[5].numpy())
    with pytest.raises(ValueError, match="dimensions"):
        sign_matrix(torch.randn(4, 6), lb)


def test_greedy_meets_delta_and_compares_with_brute_force():
    """Tiny random instances: δ holds; the worst coverage ratio greedy / optimum is reported."""
    rng = np.random.default_rng(42)
    ratios = []
    for _ in range(150):
        n, m = int(rng.integers(8, 16)), int(rng.integers(3, 9))
        sides, same = random_instance(rng, n, m, p_side=rng.uniform(0.2, 0.8))
        signs = SignMatrix(n, m, packed=pack_bits(sides.T))
        base = greedy_scsc(signs, sides[0], same)
        for delta in sorted({base.min_delta, base.min_delta + 1, base.min_delta + 3}):
            res = greedy_scsc(signs, sides[0], same, delta=delta)
            cov = coverage_of(sides, 0, list(res.selected))
            assert np.array_equal(cov, res.covered)  # reported cover is the true cover of P
            assert res.n_other <= delta  # the constraint holds
            assert res.covered[0]  # the seed covers itself
            best = brute_force(sides, same, delta)
            assert res.n_same <= best
            ratios.append(res.n_same / best)
    worst = min(ratios)
    print(
        f"SCSC greedy / brute force, worst coverage ratio over {len(ratios)} instances: {worst:.3f}, "
        f"mean {np.mean(ratios):.3f}, optimal in {np.mean(np.isclose(ratios, 1)):.0%}"
    )
    assert worst >= 0.25
    assert np.mean(ratios) >= 0.9


def test_backends_agree_and_pruning_keeps_counts():
    rng = np.random.default_rng(7)
    for _ in range(8):
        n, m = 500, 60
        sides, same = random_instance(rng, n, m, p_side=0.7)
        packed = greedy_scsc(SignMatrix(n, m, packed=pack_bits(sides.T)), sides[0], same)
        dense = greedy_scsc(SignMatrix(n, m, dense=torch.from_numpy(sides)), sides[0], same)
        assert np.array_equal(packed.selected, dense.selected)
        assert np.array_equal(packed.covered, dense.covered)
        unpruned = greedy_scsc(
            SignMatrix(n, m, dense=torch.from_numpy(sides)), sides[0], same, prune=False
        )
        assert (unpruned.n_same, unpruned.n_other) == (packed.n_same, packed.n_other)
        assert len(packed.selected) <= len(unpruned.selected) == unpruned.steps
        # after pruning, every remaining boundary is needed
        for h in packed.selected:
            rest = [g for g in packed.selected if g != h]
            assert not np.array_equal(coverage_of(sides, 0, rest), packed.covered)


def test_default_delta_is_smallest_feasible_and_smaller_is_an_error():
    rng = np.random.default_rng(3)
    sides, same = random_instance(rng, 40, 3, p_side=0.9)
    signs = SignMatrix(40, 3, packed=pack_bits(sides.T))
    res = greedy_scsc(signs, sides[0], same)
    all_cov = coverage_of(sides, 0, [0, 1, 2])
    assert res.min_delta == res.delta == int((all_cov & ~same).sum()) > 0
    with pytest.raises(
        InfeasibleDeltaError,
        match=rf"delta={res.min_delta - 1} is infeasible.*delta >= {res.min_delta}",
    ):
        greedy_scsc(signs, sides[0], same, delta=res.min_delta - 1)
    with pytest.raises(InfeasibleDeltaError, match="must be >= 0"):
        greedy_scsc(signs, sides[0], same, delta=-1)


def test_large_delta_selects_nothing():
    rng = np.random.default_rng(4)
    sides, same = random_instance(rng, 30, 5)
    res = greedy_scsc(SignMatrix(30, 5, dense=torch.from_numpy(sides)), sides[0], same, delta=30)
    assert len(res.selected) == 0 and res.covered.all()


def test_mask_shapes_are_checked():
    signs = SignMatrix(10, 2, dense=torch.zeros(10, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        greedy_scsc(signs, np.zeros(2, bool), np.zeros(9, bool))
    with pytest.raises(ValueError, match=r"seed_sides must have shape \(2,\)"):
        greedy_scsc(signs, np.zeros(3, bool), np.zeros(10, bool))
