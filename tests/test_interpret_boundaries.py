"""Exactness of the closed-form decision boundaries and of the sampled candidates."""

import pytest
import torch
from torch import nn

from glassbox.interpret import bisect_class_change, decision_boundaries, sample_candidates

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                m.weight.data.normal_()
                m.bias.data.normal_()


HEADS = {
    "linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 5)),
    "mlp2_bn": lambda: nn.Sequential(
        nn.Flatten(),
        nn.Linear(96, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(32, 5),
    ),
    "pool_mlp3": lambda: nn.Sequential(
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 32),
        nn.ReLU(),
        nn.Linear(32, 16),
        nn.LeakyReLU(0.1),
        nn.Linear(16, 5),
    ),
    "conv_bn_pool_mlp4": lambda: nn.Sequential(
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 24),
        nn.ReLU(),
        nn.Linear(24, 24),
        nn.ReLU(),
        nn.Linear(24, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ),
    "avgpool": lambda: nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 5)
    ),
}


def autograd_boundaries(head, alpha, p, q):
    """Oracle: the full Jacobian of each image separately."""
    ws, bs = [], []
    for a, pi, qi in zip(alpha, p, q):
        jac = torch.autograd.functional.jacobian(
            lambda z: head(z[None].clone())[0], a
        )  # (classes, *shape)
        w = (jac[pi] - jac[qi]).reshape(-1)
        with torch.no_grad():
            out = head(a[None].clone())[0]
        ws.append(w)
        bs.append(out[pi] - out[qi] - w @ a.reshape(-1))
    return torch.stack(ws), torch.stack(bs)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_closed_form_equals_autograd(name):
    torch.manual_seed(1)
    head = HEADS[name]()
    _randomise_bn(head)
    head.eval()
    alpha = torch.randn(40, 6, 4, 4)
    lb = decision_boundaries(head, alpha, batch_size=16)
    with torch.no_grad():
        top = head(alpha).topk(2, 1).indices
    assert torch.equal(lb.pos_class, top[:, 0]) and torch.equal(lb.neg_class, top[:, 1])
    w_ref, b_ref = autograd_boundaries(head, alpha, lb.pos_class, lb.neg_class)
    rel_w = float((lb.weight - w_ref).norm() / w_ref.norm())
    rel_b = float((lb.bias - b_ref).norm() / b_ref.norm())
    assert rel_w <= 1e-5, rel_w
    assert rel_b <= 1e-5, rel_b
    # The hyperplane reproduces the logit gap at the point itself.
    with torch.no_grad():
        logits = head(alpha)
    gap = (
        logits.gather(1, lb.pos_class[:, None])[:, 0]
        - logits.gather(1, lb.neg_class[:, None])[:, 0]
    )
    torch.testing.assert_close(lb.decision_values(alpha).diagonal(), gap, rtol=1e-5, atol=1e-5)


def test_explicit_class_pairs_and_inplace_relu_leave_inputs_untouched():
    torch.manual_seed(2)
    head = nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(96, 4)).eval()
    alpha = torch.randn(10, 6, 4, 4)
    before = alpha.clone()
    p = torch.zeros(10, dtype=torch.long)
    q = torch.full((10,), 3)
    lb = decision_boundaries(head, alpha, pos_class=p, neg_class=q)
    assert torch.equal(alpha, before)
    w_ref, b_ref = autograd_boundaries(head, alpha, p, q)
    torch.testing.assert_close(lb.weight, w_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lb.bias, b_ref, rtol=1e-5, atol=1e-5)


def test_bisection_finds_the_class_change_and_the_candidate_passes_through_it():
    torch.manual_seed(3)
    head = HEADS["pool_mlp3"]().eval()
    feats = torch.randn(64, 6, 4, 4)
    with torch.no_grad():
        pred = head(feats).argmax(1)
    seed = 0
    others = feats[pred != pred[seed]][:20]
    inside, other, gap2 = bisect_class_change(
        head, feats[seed].expand_as(others), others, pred[seed].reshape(1)
    )
    with torch.no_grad():
        logits = head(inside)
    assert (logits.argmax(1) == pred[seed]).all()
    assert (other != pred[seed]).all()
    assert float(gap2.max()) < 1e-6 * float(logits.abs().max()) ** 2
    cands = sample_candidates(head, feats[seed], int(pred[seed]), others)
    assert len(cands) == len(others) >= 10 and (cands.pos_class == pred[seed]).all()
    # Each candidate hyperplane passes (almost) through its crossing point.
    vals = cands.decision_values(inside).diagonal()
    assert float(vals.abs().max()) < 1e-3 * float(logits.abs().max())


def test_segments_that_do_not_change_class_are_rejected():
    head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    cls = head(x).argmax(1)
    with pytest.raises(ValueError, match="another top-1 class"):
        bisect_class_change(head, x, x, cls)


# Heads that exercise every fast rule of the right-to-left pass and the per-layer autograd
# fallback: overlapping / padded / ceil-mode max-pools with many ties (ReLU zeros), pooled
# averages that are not the identity, BatchNorm without affine, in-place activations, layers
# after the last Linear, and unusual leaves (PReLU, Hardtanh, ReLU6, Unflatten, Conv).
MORE_HEADS = {
    "maxpool_overlap_ties": lambda: nn.Sequential(
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(24, 12),
        nn.ReLU(inplace=True),
        nn.Linear(12, 5),
    ),
    "maxpool_ceil_dilated": lambda: nn.Sequential(
        nn.MaxPool2d(2, stride=3, dilation=2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(24, 5),
    ),
    "avg_pools": lambda: nn.Sequential(
        nn.AvgPool2d(2, stride=1),
        nn.AdaptiveAvgPool2d((2, None)),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.BatchNorm1d(24, affine=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(24, 5),
    ),
    "odd_leaves": lambda: nn.Sequential(
        nn.Flatten(),
        nn.Linear(96, 32),
        nn.PReLU(),
        nn.Unflatten(1, (2, 4, 4)),
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Hardtanh(-2.0, 2.0),
        nn.Flatten(),
        nn.ReLU6(inplace=True),
        nn.Linear(48, 5),
        nn.Identity(),
        nn.Dropout(0.5),
    ),
    "ends_in_activation": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, 5), nn.LeakyReLU(0.3)
    ),
}


@pytest.mark.parametrize("name", sorted(MORE_HEADS))
def test_fast_rules_and_fallback_equal_autograd(name):
    torch.manual_seed(4)
    head = MORE_HEADS[name]()
    _randomise_bn(head)
    head.eval()
    # Rounded ReLU inputs: many exact ties inside the max-pool windows.
    alpha = torch.randn(30, 6, 4, 4).mul(2).round()
    before = alpha.clone()
    lb = decision_boundaries(head, alpha, batch_size=7)
    assert torch.equal(alpha, before)
    assert lb.weight.shape == (30, 96) and lb.feature_shape == (6, 4, 4)
    w_ref, b_ref = autograd_boundaries(head, alpha, lb.pos_class, lb.neg_class)
    rel_w = float((lb.weight - w_ref).norm() / w_ref.norm())
    rel_b = float((lb.bias - b_ref).norm() / b_ref.norm())
    assert rel_w <= 1e-5, rel_w
    assert rel_b <= 1e-5, rel_b


def test_alexnet_like_head_matches_per_logit_autograd():
    # The benchmark's structure (MaxPool → identity AdaptiveAvgPool → Flatten → Dropout/Linear/ReLU
    # ×2 → Linear), checked against one backward pass per logit, with non-random class pairs.
    torch.manual_seed(5)
    head = nn.Sequential(
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(24, 32),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(32, 32),
        nn.ReLU(inplace=True),
        nn.Linear(32, 7),
    ).eval()
    alpha = torch.relu(torch.randn(25, 6, 4, 4))
    p = torch.arange(25) % 7
    q = (p + 3) % 7
    lb = decision_boundaries(head, alpha, pos_class=p, neg_class=q)
    w_ref, b_ref = autograd_boundaries(head, alpha, p, q)
    torch.testing.assert_close(lb.weight, w_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lb.bias, b_ref, rtol=1e-5, atol=1e-5)
