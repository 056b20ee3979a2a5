"""Whole tomograms given another dataset's power spectrum, tile by tile."""
import numpy as np
import torch
from scipy import ndimage

from etpicker.core import io
from etpicker.core.spectrum import SpectrumShift, power_spectrum, restyle_tomogram


def _patches(volume, size, count, seed):
    """A batch of random standardised patches of a volume."""
    rng = np.random.default_rng(seed)
    patches = []
    for _ in range(count):
        lo = [int(rng.integers(0, n - size + 1)) for n in volume.shape]
        block = np.asarray(volume[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size], np.float32)
        patches.append((block - block.mean()) / block.std())
    return torch.from_numpy(np.stack(patches))[:, None]


def test_a_tomogram_restyled_without_a_shift_is_itself_standardised(tmp_path):
    """The half-overlapping windows add back up to the volume exactly, at its faces too."""
    volume = np.random.default_rng(0).standard_normal((20, 27, 33)).astype(np.float32) * 3 + 5
    size = 8
    frequencies = (size, size, size // 2 + 1)
    identity = SpectrumShift(torch.ones(frequencies), torch.zeros(frequencies))
    path = restyle_tomogram(volume, (5.0, 3.0), tmp_path / "same.mrc", identity, 0, 10.0, log=lambda _: None)
    written = io.open_tomogram(path)
    np.testing.assert_allclose(written.data, (volume - 5) / 3, atol=1e-4)
    assert written.voxel_size == 10.0


def test_a_smooth_tomogram_restyled_as_a_white_one_gets_its_spectrum(tmp_path):
    """Patches anywhere in a restyled smooth (source-like) tomogram have the power spectrum of
    the white (target-like) one, not their own."""
    rng = np.random.default_rng(1)
    smooth = ndimage.gaussian_filter(rng.standard_normal((48, 64, 64)), 1.5).astype(np.float32)
    smooth /= smooth.std()
    white = rng.standard_normal((48, 64, 64)).astype(np.float32)
    size = 16
    shift = SpectrumShift.between(_patches(smooth, size, 32, 2), _patches(white, size, 32, 3))
    path = restyle_tomogram(smooth, (0.0, 1.0), tmp_path / "styled.mrc", shift, 0, 10.0, log=lambda _: None)
    restyled = io.open_tomogram(path).data
    target = power_spectrum(_patches(white, size, 32, 4))

    def log_error(volume):  # mean |log| ratio to the target's spectrum, the zero frequency left out
        return (power_spectrum(_patches(volume, size, 32, 5)) / target).flatten()[1:].log().abs().mean().item()

    assert log_error(smooth) > 2.0
    assert log_error(restyled) < 0.3
