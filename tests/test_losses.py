import math

import pytest
import torch

from flmlib.losses import LOSSES, build_loss, mse, smooth_l1, wing

# Two faces with two coordinates each; differences pred - target: face 1 (0.05, -0.3), face 2 (0.1, 0.0).
PRED = torch.tensor([[0.55, 0.2], [0.6, 0.4]])
TARGET = torch.tensor([[0.5, 0.5], [0.5, 0.4]])


def test_mse_hand_computed():
    # sum over coordinates, mean over the 2 faces
    expected = ((0.05**2 + 0.3**2) + (0.1**2 + 0.0)) / 2
    assert mse(PRED, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_smooth_l1_hand_computed():
    beta = 0.2
    face1 = 0.5 * 0.05**2 / beta + (0.3 - 0.5 * beta)
    face2 = 0.5 * 0.1**2 / beta + 0.0
    assert smooth_l1(PRED, TARGET, beta=beta).item() == pytest.approx((face1 + face2) / 2, rel=1e-6)


def test_wing_hand_computed():
    w, eps = 0.1, 0.02
    c = w - w * math.log(1 + w / eps)
    face1 = w * math.log(1 + 0.05 / eps) + (0.3 - c)  # 0.05 < w: log part; 0.3 >= w: linear part
    face2 = (0.1 - c) + 0.0  # |x| = w exactly: linear part, equal to w*log(1 + w/eps) by continuity
    assert face2 == pytest.approx(w * math.log(1 + w / eps))
    assert wing(PRED, TARGET, w=w, epsilon=eps).item() == pytest.approx((face1 + face2) / 2, rel=1e-5)


def test_shapes_68x2_and_136_agree():
    pred, target = torch.rand(3, 68, 2), torch.rand(3, 68, 2)
    for fn in LOSSES.values():
        assert fn(pred.reshape(3, 136), target).item() == pytest.approx(fn(pred, target).item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_at_perfect_prediction_with_finite_gradient(name):
    target = torch.rand(4, 136)
    pred = target.clone().requires_grad_(True)
    loss = build_loss(name)(pred, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_build_loss_errors():
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        build_loss("l2")
    with pytest.raises(TypeError):
        build_loss("mse", w=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        build_loss("wing", epsilon=0.0)
    with pytest.raises(ValueError, match="do not match"):
        mse(torch.zeros(2, 136), torch.zeros(2, 68, 3))
