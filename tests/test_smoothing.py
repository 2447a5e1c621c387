"""The One-Euro filter: the paper's formulas, constant / noisy / ramp signals, missing frames, shapes."""
import math

import numpy as np
import pytest

import yaml

from flmlib.paths import PROJECT_ROOT
from flmlib.smoothing import OneEuroFilter, smooth_sequence, smoothing_factor

FPS = 30.0


def reference(xs, ts, min_cutoff, beta, d_cutoff):
    """Scalar One-Euro filter written straight from Casiez et al. (2012), speed from consecutive raw samples."""
    out, x_hat, x_prev, dx_hat, t_prev = [], None, None, 0.0, None
    for x, t in zip(xs, ts):
        if x_hat is None:
            x_hat = x
        else:
            te = t - t_prev
            alpha = lambda fc: 1.0 / (1.0 + (1.0 / (2 * math.pi * fc)) / te)  # noqa: E731
            dx_hat = dx_hat + alpha(d_cutoff) * ((x - x_prev) / te - dx_hat)
            x_hat = x_hat + alpha(min_cutoff + beta * abs(dx_hat)) * (x - x_hat)
        x_prev, t_prev = x, t
        out.append(x_hat)
    return np.array(out)


def test_smoothing_factor_is_the_papers():
    te, fc = 1 / 30, 1.0
    assert smoothing_factor(te, fc) == pytest.approx(1 / (1 + (1 / (2 * math.pi * fc)) / te))
    assert smoothing_factor(te, 1e9) == pytest.approx(1.0)  # a very high cutoff passes the signal through


def test_the_filters_defaults_are_the_studys_video_settings():
    """The defaults (the Python API's, and `flm video`'s away from a params.yaml) are the settings the video stage
    measured: params.yaml's video section."""
    video = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["video"]
    f = OneEuroFilter()
    assert (f.min_cutoff, f.beta, f.d_cutoff) == (video["min_cutoff"], video["beta"], video["d_cutoff"])


def test_matches_scalar_reference_per_coordinate_with_variable_frame_interval():
    rng = np.random.default_rng(1)
    n = 80
    ts = np.cumsum(rng.uniform(1 / 60, 1 / 15, n))  # irregular frame times, 15-60 fps
    signal = rng.normal(0, 2, (n, 68, 2)) + 50 * np.sin(ts)[:, None, None] * rng.uniform(0.5, 1.5, (1, 68, 2))
    out = smooth_sequence(signal, timestamps=ts, min_cutoff=0.7, beta=0.05, d_cutoff=1.5)
    assert out.shape == (n, 68, 2) and out.dtype == np.float64
    for i, j in [(0, 0), (17, 1), (67, 0)]:
        np.testing.assert_allclose(out[:, i, j], reference(signal[:, i, j], ts, 0.7, 0.05, 1.5), rtol=0, atol=1e-9)


def test_constant_signal_passes_unchanged():
    value = np.random.default_rng(2).uniform(0, 500, (68, 2))
    f = OneEuroFilter()
    for k in range(30):
        np.testing.assert_allclose(f(value, k / FPS), value, rtol=0, atol=1e-12)


def test_constant_after_a_jump_converges():
    f = OneEuroFilter()
    for k in range(10):
        f(np.zeros((68, 2)), k / FPS)
    out = [f(np.full((68, 2), 5.0), (10 + k) / FPS) for k in range(60)]
    assert np.abs(out[-1] - 5.0).max() < 1e-3  # within 2 s the output has settled on the new constant
    assert np.all(np.diff([o[0, 0] for o in out]) >= -1e-12)  # and approached it without overshoot


def test_white_noise_jitter_is_reduced():
    rng = np.random.default_rng(3)
    noisy = 100.0 + rng.normal(0, 0.5, (300, 68, 2))  # a still landmark seen with 0.5 px noise per coordinate
    out = smooth_sequence(noisy, fps=FPS)[30:]
    noisy = noisy[30:]
    deviation = lambda a: np.sqrt(np.mean((a - 100.0) ** 2))  # noqa: E731
    shake = lambda a: np.sqrt(np.mean(np.diff(a, 2, axis=0) ** 2))  # noqa: E731
    assert deviation(noisy) / deviation(out) > 2.0  # measured 2.3 with the defaults
    assert shake(noisy) / shake(out) > 4.0  # frame-to-frame shake: measured 4.8


def test_without_beta_it_is_the_first_order_low_pass():
    rng = np.random.default_rng(4)
    noisy = rng.normal(0, 1.0, (3000, 4))
    out = smooth_sequence(noisy, fps=FPS, min_cutoff=1.0, beta=0.0)
    alpha = smoothing_factor(1 / FPS, 1.0)
    expected = math.sqrt((2 - alpha) / alpha)  # std reduction of an exponential smoother on white noise
    assert noisy[100:].std() / out[100:].std() == pytest.approx(expected, rel=0.1)


def test_ramp_is_followed_with_small_lag_thanks_to_beta():
    speed = 100.0  # px/s, 3.3 px per frame at 30 fps
    t = np.arange(90) / FPS
    ramp = np.broadcast_to((speed * t)[:, None, None], (90, 68, 2))
    lag = lambda out: float(((ramp - out) / (speed / FPS))[-30:].mean())  # noqa: E731  (frames, steady state)
    with_beta = lag(smooth_sequence(ramp, fps=FPS))
    without = lag(smooth_sequence(ramp, fps=FPS, beta=0.0))
    assert 0 < with_beta < 0.5  # theory: cutoff 1 + 0.15 * 100 = 16 Hz -> (1 - a) / a = 0.30 frames
    assert without > 4.0  # min_cutoff alone: 1 Hz -> 4.8 frames


def test_nan_frame_passes_through_and_resets():
    f = OneEuroFilter()
    for k in range(10):
        f(np.zeros((68, 2)), k / FPS)
    missing = f(np.full((68, 2), np.nan), 10 / FPS)
    assert np.isnan(missing).all()
    fresh = np.full((68, 2), 40.0)
    np.testing.assert_array_equal(f(fresh, 11 / FPS), fresh)  # not pulled toward the old position


def test_partly_missing_points_reset_only_those():
    f = OneEuroFilter(beta=0.0)
    for k in range(5):
        f(np.zeros((68, 2)), k / FPS)
    x = np.full((68, 2), 10.0)
    x[3] = np.nan
    out = f(x, 5 / FPS)
    assert np.isnan(out[3]).all() and np.isfinite(np.delete(out, 3, axis=0)).all()
    assert 0 < out[0, 0] < 10  # filtered
    after = f(np.full((68, 2), 10.0), 6 / FPS)
    assert after[3, 0] == 10.0 and after[0, 0] < 10  # point 3 restarted, the others kept their state


def test_reset_forgets_state_and_shape():
    f = OneEuroFilter()
    f(np.zeros((68, 2)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros((5, 2)), 1 / FPS)
    f.reset()
    np.testing.assert_array_equal(f(np.ones((5, 2)), 0.0), np.ones((5, 2)))  # new shape, and time may restart


def test_vectorised_shapes_and_input_not_modified():
    f = OneEuroFilter()
    x = np.random.default_rng(5).normal(size=(68, 2)).astype(np.float32)
    keep = x.copy()
    assert f(x, 0.0).shape == (68, 2)
    assert f(x + 1, 1 / FPS).shape == (68, 2)
    np.testing.assert_array_equal(x, keep)
    assert smooth_sequence(np.zeros((7, 3, 68, 2)), fps=FPS).shape == (7, 3, 68, 2)


def test_timestamps_default_to_rate_and_must_increase():
    a, b = OneEuroFilter(rate=25.0), OneEuroFilter()
    xs = np.random.default_rng(6).normal(size=(20, 68, 2))
    for k, x in enumerate(xs):
        np.testing.assert_allclose(a(x), b(x, k / 25.0), atol=1e-12)
    with pytest.raises(ValueError, match="not after"):
        b(xs[0], 0.5)


@pytest.mark.parametrize("kwargs", [{"min_cutoff": 0}, {"min_cutoff": -1}, {"beta": -0.1}, {"d_cutoff": 0},
                                    {"min_cutoff": float("nan")}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        OneEuroFilter(**kwargs)
