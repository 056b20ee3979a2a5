import numpy as np
import pytest
import torch
from torch import nn

from etpicker.core.io import InputError
from etpicker.core.tiling import batch_for, choose_tile, read_tile, segment, tile_origins

torch.set_num_threads(1)


@pytest.mark.parametrize("shape, tile, pad", [
    ((40, 40, 40), 16, 4), ((37, 23, 50), 16, 3), ((5, 9, 3), 16, 4), ((16, 17, 8), 16, 0), ((33, 1, 20), 24, 5),
    ((64, 100, 37), (64, 48, 16), 5), ((128, 256, 256), (128, 104, 256), 7),
])
def test_kept_regions_cover_every_voxel_exactly_once(shape, tile, pad):
    count = np.zeros(shape, dtype=np.int32)
    sizes = tile if isinstance(tile, tuple) else (tile,) * 3
    for kept in tile_origins(shape, tile, pad):
        count[tuple(slice(s, e) for s, e in zip(kept.keep_start, kept.keep_stop))] += 1
        for o, s, e, n, t in zip(kept.origin, kept.keep_start, kept.keep_stop, shape, sizes):
            # a kept voxel has pad voxels of context, or all the volume has on that side
            assert o <= s - pad or o == 0 or o == -pad
            assert e + pad <= o + t or o + t == n or n < t
            if n >= t:  # tiles stay inside volumes that can hold them: no mirrored data
                assert 0 <= o and o + t <= n
            else:
                assert o >= -pad
    assert np.all(count == 1)


@pytest.mark.parametrize("shape, gain", [((128, 256, 256), 2.8), ((300, 1024, 1024), 2.7), ((61, 130, 97), 1.9)])
def test_the_chosen_tile_computes_fewer_voxels_within_the_memory_budget(shape, gain):
    patch, pad, budget = 40, 7, 1_860_000

    def computed(tile):
        return len(tile_origins(shape, tile, pad)) * np.prod(tile)

    tile = choose_tile(shape, patch, pad, budget)
    assert np.prod(tile) <= budget and all(t % 8 == 0 and t >= patch for t in tile)
    assert computed(tile) * gain <= computed((patch,) * 3)  # patch-sized tiles overlap 3.8 times over
    assert computed(tile) <= min(computed((t,) * 3) for t in range(patch, 160, 8) if t ** 3 <= budget)
    assert choose_tile(shape, patch, pad) == (patch,) * 3  # CoordConv: the patch, always
    assert batch_for(tile, 4, budget) == max(1, min(4, budget // np.prod(tile)))


def test_bad_pad_is_refused():
    with pytest.raises(InputError, match="pad"):
        tile_origins((10, 10, 10), 16, 8)


def test_tiles_are_reflect_padded_at_the_border():
    volume = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    tile = read_tile(volume, (-3, 2, 4), 8)
    np.testing.assert_array_equal(tile, np.pad(volume, 8, mode="reflect")[5:13, 10:18, 12:20])


class MeanFilterNet(nn.Module):
    """A stand-in network: logits from a 3x3x3 local mean, so tile context matters."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Conv3d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.mean.weight, 1 / 27)

    def forward(self, x):
        m = self.mean(x)
        return torch.cat([torch.zeros_like(m), 4 * (m - 1), 4 * (-m - 1)], dim=1)  # bg, bright, dark


def _direct(volume, centre, scale, mode="constant"):
    """The same network applied to the whole volume at once. Border tiles lie inside the
    volume, so at its faces the network sees what it sees at any tile edge (zero padding);
    only a volume smaller than a tile is reflect-padded."""
    net = MeanFilterNet()
    x = torch.from_numpy(np.pad((volume - centre) / scale, 1, mode=mode))[None, None]
    with torch.no_grad():
        m = nn.functional.conv3d(x, net.mean.weight)
        logits = torch.cat([torch.zeros_like(m), 4 * (m - 1), 4 * (-m - 1)], dim=1)
        return torch.softmax(logits, dim=1)[0].numpy()


def test_segment_equals_whole_volume_computation():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(21, 30, 19)).astype(np.float32)
    volume[5:12, 6:14, 4:10] += 8
    volume[14:20, 20:28, 10:17] -= 8
    probability = np.zeros(volume.shape, np.float32)
    class_map = segment(MeanFilterNet(), volume, centre=0.5, scale=2.0, tile=16, pad=2, batch=3,
                        probability_out=probability)
    expected = _direct(volume, 0.5, 2.0)
    np.testing.assert_allclose(probability, 1 - expected[0], atol=1e-5)
    best = expected[1:].argmax(axis=0)
    expected_map = np.where(1 - expected[0] >= 0.5, best + 1, 0)
    decided = np.abs(expected[0] - 0.5) > 1e-4  # ignore voxels on the threshold knife edge
    np.testing.assert_array_equal(class_map[decided], expected_map[decided])
    assert (class_map == 1).sum() > 100 and (class_map == 2).sum() > 100


class SplitNet(nn.Module):
    """A stand-in network: everywhere background 0.4 and each class 0.3."""

    def forward(self, x):
        probabilities = torch.tensor([0.4, 0.3, 0.3]).log().view(1, 3, 1, 1, 1)
        return probabilities.expand(len(x), 3, *x.shape[2:])


def test_a_voxel_is_foreground_when_background_is_unlikely_even_if_no_class_is_likely():
    # foreground 0.6 >= 0.5 although each class alone is 0.3: the voxel belongs to a particle
    class_map = segment(SplitNet(), np.zeros((8, 16, 16), np.float32), 0.0, 1.0, tile=16, pad=2)
    assert np.all(class_map == 1)


def test_segment_refuses_a_threshold_outside_0_1():
    with pytest.raises(InputError, match="threshold"):
        segment(MeanFilterNet(), np.zeros((8, 8, 8), np.float32), 0.0, 1.0, tile=16, pad=2, threshold=1.5)


def test_segment_refuses_nan():
    volume = np.zeros((8, 16, 16), np.float32)
    volume[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        segment(MeanFilterNet(), volume, 0.0, 1.0, tile=16, pad=2)


def test_segment_of_a_volume_smaller_than_a_tile():
    volume = np.random.default_rng(1).normal(size=(5, 9, 3)).astype(np.float32) * 3
    probability = np.zeros(volume.shape, np.float32)
    segment(MeanFilterNet(), volume, 0.0, 1.0, tile=16, pad=4, probability_out=probability)
    np.testing.assert_allclose(probability, 1 - _direct(volume, 0.0, 1.0, "reflect")[0], atol=1e-5)
