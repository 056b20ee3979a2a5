import numpy as np
import pytest
import scipy.fft

from etpicker.core import io, simulate

SHAPE = (32, 64, 64)


def test_ground_truth_lies_inside_with_every_class_and_whole_particles():
    tomo = simulate.simulate_tomogram(SHAPE, rng=0, snr=0.5)
    assert tomo.volume.shape == SHAPE and tomo.volume.dtype == np.float32
    assert set(tomo.names) == set(simulate.PARTICLE_CLASSES)
    size_xyz = np.array(SHAPE[::-1])
    for name, xyz in zip(tomo.names, tomo.xyz):
        radius = simulate.PARTICLE_CLASSES[name].radius
        assert np.all(xyz >= radius - 1) and np.all(xyz <= size_xyz - radius), (name, xyz)


def test_particles_do_not_overlap():
    tomo = simulate.simulate_tomogram(SHAPE, rng=1, snr=None)
    radii = np.array([simulate.PARTICLE_CLASSES[name].radius for name in tomo.names])
    distance = np.linalg.norm(tomo.xyz[:, None] - tomo.xyz[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    assert np.all(distance >= radii[:, None] + radii[None])


@pytest.mark.parametrize("snr", [0.1, 1.0])
def test_noise_gives_the_requested_signal_to_noise_ratio(snr):
    clean = simulate.simulate_tomogram(SHAPE, rng=2, snr=None).volume
    noisy = simulate.simulate_tomogram(SHAPE, rng=2, snr=snr).volume
    assert clean.var() / (noisy - clean).var() == pytest.approx(snr, rel=0.05)


def test_missing_wedge_is_empty_in_fourier_space():
    volume = simulate.simulate_tomogram(SHAPE, rng=3, snr=0.5).volume
    power = np.abs(scipy.fft.rfftn(volume)) ** 2
    kz = scipy.fft.fftfreq(SHAPE[0])[:, None, None]
    kx = scipy.fft.rfftfreq(SHAPE[2])[None, None, :]
    wedge = np.broadcast_to(np.abs(kz) > np.tan(np.radians(62)) * np.abs(kx), power.shape)
    measured = np.broadcast_to(np.abs(kz) < np.tan(np.radians(58)) * np.abs(kx), power.shape)
    assert wedge.sum() > 1000 and measured.sum() > 1000
    assert power[wedge].mean() < 1e-6 * power[measured].mean()


def test_write_dataset_gives_mrc_and_csv_pairs(tmp_path):
    stems = simulate.write_dataset(tmp_path, n_tomos=2, shape=SHAPE, snr=1.0, seed=4, log=lambda _: None)
    assert stems == ["tomo_000", "tomo_001"]
    first = io.open_tomogram(tmp_path / "tomo_000.mrc")
    assert first.data.shape == SHAPE and first.voxel_size == pytest.approx(10.0)
    coords = io.read_coords(tmp_path / "tomo_000.csv")
    assert len(coords) > 3 and coords.score is None
    second = io.read_coords(tmp_path / "tomo_001.csv")
    assert not np.array_equal(coords.xyz, second.xyz)


def test_bad_shape_is_an_input_error():
    with pytest.raises(io.InputError, match="shape"):
        simulate.simulate_tomogram((8, 64, 64), rng=0)
