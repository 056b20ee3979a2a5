"""Giving one dataset's volumes another's 3D power spectrum: its missing wedge, CTF and
noise level, which is what differs between datasets once every tomogram is standardised.

Where the target has less power than the source the source is attenuated; where it has
more, random-phase noise of the difference is added. `adapt --method spectrum` restyles
training patches so (periodic, one patch at a time); `restyle_tomogram` restyles whole
source tomograms, tile by tile, so that an adapted model's score thresholds and shape
checks can be tuned on annotated data that looks like the target.
"""
import math
from dataclasses import dataclass

import mrcfile
import numpy as np
import torch

from .io import release_pages


def power_spectrum(batch):
    """Mean |FFT|^2 (rfft layout) of a B x 1 x N^3 batch of standardised patches."""
    return torch.fft.rfftn(batch[:, 0].double(), dim=(1, 2, 3)).abs().square().mean(dim=0)


@dataclass
class SpectrumShift:
    """From a source's power spectrum to a target's, per frequency of an N^3 patch's rfft."""
    gain: torch.Tensor  # <= 1: the attenuation where the target has less power
    noise: torch.Tensor  # the added noise's amplitude where it has more

    @classmethod
    def between(cls, source_batch, target_batch, device="cpu"):
        """The shift from the mean spectrum of one batch of standardised patches to another's."""
        source, target = power_spectrum(source_batch), power_spectrum(target_batch)
        return cls(torch.sqrt((target / source.clamp_min(1e-12)).clamp(max=1.0)).float().to(device),
                   torch.sqrt((target - source).clamp_min(0.0)).float().to(device))

    @property
    def size(self):
        return self.gain.shape[0]

    def apply(self, batch, strength, generator):
        """The B x N^3 `batch` (periodic patches) moved `strength` (B x 1 x 1 x 1, 1: all the way)
        towards the target's spectrum."""
        spectrum = torch.fft.rfftn(batch, dim=(1, 2, 3)) * (1 - strength + strength * self.gain)
        white = torch.randn(batch.shape, generator=generator, device=batch.device)
        spectrum = spectrum + strength * torch.fft.rfftn(white, dim=(1, 2, 3)) * self.noise / math.sqrt(white[0].numel())
        return torch.fft.irfftn(spectrum, s=batch.shape[1:], dim=(1, 2, 3))


def _window(size):
    """A sine window whose squares at half-overlapping tiles sum to one, in 3D: analysis and
    synthesis by it reconstruct a volume exactly where nothing is changed."""
    line = np.sin(np.pi * (np.arange(size) + 0.5) / size)
    return torch.from_numpy(line[:, None, None] * line[None, :, None] * line[None, None, :]).float()


def restyle_tomogram(volume, stats, path, shift, seed, voxel_size, log=print):
    """Write to `path` (MRC, float32, standardised) the tomogram `volume` (a memory map),
    standardised by `stats` (centre, scale), given the target's spectrum: half-overlapping
    windowed tiles of the shift's size are restyled and added back, a row of tiles at a time,
    so that neither the tomogram nor its tiles are ever all in memory."""
    size, centre, scale = shift.size, *stats
    hop = size // 2
    window = _window(size)
    generator = torch.Generator().manual_seed(seed)
    shape = np.array(volume.shape)
    origins = [range(-hop, n, hop) for n in shape]  # every voxel in 2 tiles along each axis
    with mrcfile.new_mmap(path, shape=tuple(int(n) for n in shape), mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = float(voxel_size or 0.0)
        out = mrc.data  # zeros
        for z in origins[0]:
            for y in origins[1]:
                tiles, places = [], []
                for x in origins[2]:
                    low = np.array([z, y, x])
                    high = low + size
                    src_low, src_high = np.maximum(low, 0), np.minimum(high, shape)
                    tile = np.zeros((size,) * 3, np.float32)  # outside the volume: its mean
                    src = tuple(slice(a, b) for a, b in zip(src_low, src_high))
                    dst = tuple(slice(a - lo, b - lo) for a, b, lo in zip(src_low, src_high, low))
                    tile[dst] = (np.asarray(volume[src], np.float32) - centre) / scale
                    tiles.append(tile)
                    places.append((src, dst))
                batch = torch.from_numpy(np.stack(tiles)) * window
                restyled = (shift.apply(batch, torch.ones(len(batch), 1, 1, 1), generator) * window).numpy()
                for tile, (src, dst) in zip(restyled, places):
                    out[src] += tile[dst]
            release_pages(volume)
        log(f"restyled {path.name} as the target: standard deviation {float(np.std(out[::4, ::4, ::4])):.2f} "
            f"(the source standardised: 1)")
    return path
