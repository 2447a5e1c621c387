"""The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012), vectorised over landmark arrays.

A first-order low-pass filter whose cutoff frequency rises with the signal's speed: at rest a low cutoff removes
jitter, in fast motion a high cutoff removes lag. For every sample ``x_i`` at time ``t_i`` (seconds):

* ``Te = t_i - t_(i-1)``: the sampling period (s), so a variable frame interval is handled exactly;
* ``alpha(fc) = 1 / (1 + tau / Te)`` with ``tau = 1 / (2 pi fc)``: the smoothing factor of a first-order low-pass
  of cutoff ``fc`` (Hz) sampled every ``Te`` seconds;
* ``dx_i = (x_i - x_(i-1)) / Te``: the speed (units per second) from consecutive *raw* samples, as in the
  authors' reference implementation (some ports difference against the previous output ``x_hat_(i-1)`` instead,
  which overestimates the speed by the filter's lag), and ``dx_hat_i = dx_hat_(i-1) + alpha(d_cutoff)
  (dx_i - dx_hat_(i-1))``, the speed low-passed at the fixed cutoff ``d_cutoff``;
* ``fc_i = min_cutoff + beta |dx_hat_i|``: the adaptive cutoff (Hz);
* ``x_hat_i = x_hat_(i-1) + alpha(fc_i) (x_i - x_hat_(i-1))``: the output.

The first sample (and the first after a reset) passes unchanged with ``dx_hat = 0``. Every element of the array
(each coordinate of each landmark) is an independent filter with its own state; the time base is shared.

For landmarks in **image pixels** the parameters read:

* ``min_cutoff`` (Hz): the cutoff of a still point. The filter's time constant at rest is ``1 / (2 pi min_cutoff)``
  seconds (1 Hz: 0.16 s, about 5 frames at 30 fps); lower removes more jitter and lags more on slow motion.
* ``beta`` (Hz per px/s, i.e. 1/px): how much the cutoff rises with speed. A point moving at ``v`` px/s is filtered
  with a cutoff of ``min_cutoff + beta * v`` Hz; e.g. ``beta = 0.01`` adds 1 Hz at 100 px/s. Higher follows fast
  motion with less lag but lets more jitter through while moving. Because it multiplies a speed in pixels, its good
  value depends on the face size in pixels.
* ``d_cutoff`` (Hz): the cutoff used to smooth the speed estimate itself (the paper suggests 1 Hz; 2 Hz reacts
  sooner when a face starts moving, and did slightly better here).

Defaults (``min_cutoff`` 1 Hz, ``beta`` 0.15 /px, ``d_cutoff`` 2 Hz) were chosen on synthetic clips
(:func:`flmlib.video.synthetic_clip`: 4 HELEN test faces, 240 x 240 frames, landmark box 100 px so the
inter-ocular distance (IOD) is ~61 px, 60 frames at 30 fps, pixel noise sigma 4 grey levels, dlib HOG (upsample 1)
+ dlib's shape predictor), with three motions: *still*, *slow* (+-8 px, +-4 %, +-4 deg, one period in 2 s) and
*fast* (+-24 px, +-10 %, +-10 deg, one period per second). From a grid (min_cutoff 0.1-5 Hz, beta 0-0.5 /px,
d_cutoff 0.5-3 Hz) the rule was: lag <= 1 frame on *fast* and <= 1.5 frames on *slow*, jitter never above raw,
then the largest jitter reduction on a still face; the defaults are a round point inside that region with some
margin on the lag. Measured with them (:func:`flmlib.video.stability`; jitter = RMS second frame difference of the
error, px; lag in frames at 30 fps; mean over the 4 faces):

=====  ===============================  =====================  =====
clip   jitter raw -> smoothed           error raw -> smoothed  lag
=====  ===============================  =====================  =====
still  1.40 -> 0.29 px (x4.8)           1.95 -> 1.89 px        -
slow   1.60 -> 0.61 px (x2.6)           1.94 -> 2.14 px        1.2
fast   1.68 -> 1.49 px (x1.1)           1.96 -> 2.92 px        0.4
=====  ===============================  =====================  =====

On 4 other HELEN faces, not used to choose: x4.2, x2.6, x1.2 jitter reduction, lag 1.2 and 0.4 frames. Smoothing
trades error for steadiness: on a still face the error drops a little, in motion the lag adds error (+10 % slow,
+50 % fast). ``beta`` is per pixel of speed, so for much larger faces (say 200 px between the eyes) a
proportionally smaller ``beta`` (~0.05) gives the same behaviour; ``min_cutoff`` does not depend on the face size.
"""
from __future__ import annotations

import math

import numpy as np

#: Cutoff of a still point, Hz (defaults: module docstring, measured on synthetic clips).
DEFAULT_MIN_CUTOFF = 1.0
#: Cutoff increase per px/s of speed (1/px).
DEFAULT_BETA = 0.15
#: Cutoff of the speed estimate, Hz.
DEFAULT_D_CUTOFF = 2.0


def smoothing_factor(te, cutoff) -> np.ndarray:
    """``alpha = 1 / (1 + tau / Te)``, ``tau = 1 / (2 pi cutoff)``: ``te`` seconds, ``cutoff`` Hz (broadcast)."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / np.asarray(te, np.float64))


class OneEuroFilter:
    """One-Euro filter over arrays of any fixed shape (e.g. ``(68, 2)`` landmarks), one state per element.

    Args:
        min_cutoff: cutoff frequency of a still signal, Hz (> 0).
        beta: speed coefficient, Hz per (unit/s); for pixels, 1/px (>= 0).
        d_cutoff: cutoff frequency of the speed estimate, Hz (> 0).
        rate: samples per second assumed when :meth:`__call__` gets no timestamp (e.g. the video's fps).

    Call it once per frame with the frame's points and timestamp (seconds); it returns the filtered points, float64,
    same shape. NaN elements (a frame where the face was not found) pass through as NaN and reset their state, so
    the next valid value starts a fresh filter instead of being pulled toward a stale position.
    """

    def __init__(self, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 d_cutoff: float = DEFAULT_D_CUTOFF, rate: float = 30.0):
        for name, value, low in (("min_cutoff", min_cutoff, 0.0), ("d_cutoff", d_cutoff, 0.0), ("rate", rate, 0.0)):
            if not (math.isfinite(value) and value > low):
                raise ValueError(f"{name}={value!r} must be a finite number > 0 (Hz)")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta={beta!r} must be a finite number >= 0 (Hz per unit/s)")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.rate = float(rate)
        self.reset()

    def reset(self) -> None:
        """Forget the whole state: the next call passes its input unchanged and starts over (any shape)."""
        self._x_hat: np.ndarray | None = None  # last output, NaN where an element has no state
        self._x_prev: np.ndarray | None = None  # last raw input, NaN where an element has no state
        self._dx_hat: np.ndarray | None = None  # last filtered speed, units/s
        self._t_prev: float | None = None  # time of the last call, s
        self._count = 0

    @property
    def initialised(self) -> np.ndarray | None:
        """Boolean mask of the elements that have a state (None before the first call)."""
        return None if self._x_hat is None else np.isfinite(self._x_hat)

    def __call__(self, x, t: float | None = None) -> np.ndarray:
        """Filter one sample.

        Args:
            x: array of the filter's shape (fixed by the first call after a reset); NaN marks missing elements.
            t: the sample's time in seconds, strictly increasing; ``None`` uses ``previous t + 1 / rate``.
        Returns:
            The filtered sample, float64, same shape as ``x``.
        Raises:
            ValueError: a shape other than the first call's, or a timestamp not after the previous one.
        """
        x = np.array(x, dtype=np.float64)  # a copy: the caller's array is never changed
        if t is None:
            t = 0.0 if self._t_prev is None else self._t_prev + 1.0 / self.rate
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"timestamp {t!r} is not finite")
        if self._x_hat is None:
            self._x_hat = np.full(x.shape, np.nan)
            self._x_prev = np.full(x.shape, np.nan)
            self._dx_hat = np.zeros(x.shape)
        elif x.shape != self._x_hat.shape:
            raise ValueError(f"sample shape {x.shape} differs from the filter's {self._x_hat.shape} (call reset())")
        valid = np.isfinite(x)
        active = valid & np.isfinite(self._x_hat)  # elements with a state: filter them
        out = x.copy()
        if active.any():
            te = t - self._t_prev
            if not te > 0:
                raise ValueError(f"timestamp {t} s is not after the previous one ({self._t_prev} s)")
            prev = self._x_hat[active]
            dx = (x[active] - self._x_prev[active]) / te
            dx_hat = self._dx_hat[active] + smoothing_factor(te, self.d_cutoff) * (dx - self._dx_hat[active])
            cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
            out[active] = prev + smoothing_factor(te, cutoff) * (x[active] - prev)
            self._dx_hat[active] = dx_hat
        fresh = valid & ~active  # first value of an element (or the first after its reset): passes unchanged
        self._dx_hat[fresh] = 0.0
        self._dx_hat[~valid] = 0.0  # missing: reset
        self._x_hat = np.where(valid, out, np.nan)
        self._x_prev = np.where(valid, x, np.nan)
        self._t_prev = t
        self._count += 1
        return out


def smooth_sequence(points, fps: float | None = None, timestamps=None, min_cutoff: float = DEFAULT_MIN_CUTOFF,
                    beta: float = DEFAULT_BETA, d_cutoff: float = DEFAULT_D_CUTOFF) -> np.ndarray:
    """Filter a whole ``(T, ...)`` sequence (e.g. ``(T, 68, 2)`` pixels) causally, as a live video would be.

    Args:
        points: ``(T, ...)`` samples; a frame with NaN points passes through and resets those elements.
        fps: frames per second when ``timestamps`` is not given (sample ``i`` at ``i / fps`` s).
        timestamps: ``(T,)`` seconds, strictly increasing (variable frame interval).
    Returns:
        ``(T, ...)`` float64 filtered samples.
    """
    points = np.asarray(points, np.float64)
    if timestamps is None:
        if fps is None:
            raise ValueError("give fps or timestamps")
        timestamps = np.arange(len(points)) / float(fps)
    timestamps = np.asarray(timestamps, np.float64)
    if timestamps.shape != (len(points),):
        raise ValueError(f"{len(timestamps)} timestamps for {len(points)} samples")
    filt = OneEuroFilter(min_cutoff, beta, d_cutoff)
    return np.stack([filt(p, t) for p, t in zip(points, timestamps)]) if len(points) else points.copy()
