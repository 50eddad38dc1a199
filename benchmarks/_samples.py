"""Prediction-like float32 samples, generated on the fly into one reused buffer.

Shared by the benchmarks. A sample looks like the output of a denoising / segmentation
network: smooth structure (a sum of gaussian blobs and a low-frequency sinusoid, varying
slowly along z and from sample to sample) plus mild gaussian noise, so compression sees
realistic float32 mantissas rather than constant or random data.

Memory: one sample buffer (32 MiB for 1x32x512x512), two 2-D fields and a noise pool
(about 10 MiB); nothing grows with the number of samples.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SampleSource"]

# Noise pool length (in units of one y*x plane); each plane takes a random window of it.
_POOL_PLANES = 8


class SampleSource:
    """Make sample ``i`` of shape ``(c, z, y, x)`` into a reused float32 buffer.

    Parameters
    ----------
    shape
        Sample shape ``(c, z, y, x)``.
    noise
        Standard deviation of the added gaussian noise (the signal spans about 0-1).
    seed
        Seed of the fixed fields and of the noise pool.
    """

    def __init__(self, shape: tuple[int, int, int, int] = (1, 32, 512, 512),
                 noise: float = 0.01, seed: int = 0) -> None:
        _, z, y, x = shape
        self.shape = shape
        rng = np.random.default_rng(seed)
        yy = np.linspace(0.0, 1.0, y, dtype=np.float32)[:, None]
        xx = np.linspace(0.0, 1.0, x, dtype=np.float32)[None, :]
        blobs = np.zeros((y, x), dtype=np.float32)
        for _ in range(40):  # cell-like blobs of varying size and brightness
            cy, cx = rng.uniform(0, 1, 2)
            s = rng.uniform(0.02, 0.08)
            a = rng.uniform(0.3, 1.0)
            blobs += np.float32(a) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        self.blobs = np.clip(blobs, 0, 1.5).astype(np.float32)
        self.wave = (0.1 * np.sin(2 * np.pi * (3 * yy + 2 * xx))).astype(np.float32)
        self.zs = np.linspace(0.0, 1.0, z, dtype=np.float32)
        self.pool = rng.normal(0.0, noise, size=_POOL_PLANES * y * x).astype(np.float32)
        self.rng = np.random.default_rng(seed + 1)
        self.buf = np.empty(shape, dtype=np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of one sample."""
        return self.buf.nbytes

    def sample(self, i: int) -> np.ndarray:
        """Return sample ``i`` (the shared buffer: copy it to keep it)."""
        c, z, y, x = self.shape
        plane = y * x
        for ci in range(c):
            for zi in range(z):
                out = self.buf[ci, zi]
                # Blob brightness drifts with z and with the sample index.
                gain = np.float32(0.6 + 0.4 * np.cos(np.pi * (self.zs[zi] + 0.05 * i + 0.3 * ci)))
                np.multiply(self.blobs, gain, out=out)
                out += self.wave
                off = int(self.rng.integers(0, self.pool.size - plane))
                out += self.pool[off:off + plane].reshape(y, x)
        self.buf += np.float32(i * 0.001)
        return self.buf
