import json

import numpy as np
import pytest

from etpicker.core.io import Coords, InputError
from etpicker.core.shape_check import (ShapeCheck, apply_checks, checks_from_config, fit_shape_check,
                                       profile_radius, radial_profiles)

RADIUS = 4  # particles' outer radius, voxels


def crowd(rng, n_each=40, noise=1.0):
    """A volume of solid balls (targets) and hollow shells of the same outer radius
    (look-alikes) in noise; returns it with the balls' and the shells' centres (x, y, z)."""
    shape = (40, 96, 96)
    volume = rng.normal(0, noise, shape).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centres = [(z, y, x) for z in (10, 29) for y in range(8, 96, 11) for x in range(8, 96, 11)]
    order = rng.permutation(len(centres))[:2 * n_each]
    balls, shells = [], []
    for i, index in enumerate(order):
        centre = np.array(centres[index])
        distance = np.linalg.norm(grid - centre, axis=-1)
        if i % 2:
            volume[distance <= RADIUS] += 1.0
            balls.append(centre[::-1])
        else:
            volume[(distance <= RADIUS) & (distance > RADIUS - 1.5)] += 1.5
            shells.append(centre[::-1])
    return volume, np.array(balls, float), np.array(shells, float)


def test_profiles_do_not_depend_on_the_particle_orientation():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(21, 21, 21)).astype(np.float32)
    turned = np.rot90(volume, k=1, axes=(1, 2))  # a quarter turn about z, around the central voxel
    centre = [[10, 10, 10]]
    np.testing.assert_allclose(radial_profiles(turned, (0.0, 1.0), centre, 6),
                               radial_profiles(volume, (0.0, 1.0), centre, 6), rtol=1e-5, atol=1e-5)


def test_profiles_standardise_and_read_past_the_border_as_the_mean():
    volume = np.full((9, 9, 9), 7.0, np.float32)
    volume[4, 4, 4] = 9.0
    features = radial_profiles(volume, (7.0, 2.0), [[4, 4, 4], [0, 0, 0]], 3)
    assert features.shape == (2, 16)
    assert features[0, 0] == pytest.approx(1.0)  # the centre voxel, (9 - 7) / 2
    assert np.allclose(features[0, 1:4], 0.0)  # the mean shells around it
    assert np.isfinite(features).all()  # a pick in the corner: outside reads as 0, no error


def test_a_fitted_check_tells_targets_from_look_alikes_of_their_size():
    """What the check is for: balls and shells have the same size and the same network
    score; the profiles tell them apart in a new tomogram."""
    rng = np.random.default_rng(1)
    radius = profile_radius(5)
    volume, balls, shells = crowd(rng)
    picks = np.concatenate([balls, shells])
    is_true = np.r_[np.ones(len(balls), bool), np.zeros(len(shells), bool)]
    scores = rng.uniform(1, 2, len(picks))  # the network cannot tell them apart
    check = fit_shape_check(radial_profiles(volume, (0.0, 1.0), picks, radius), scores, is_true, radius)
    fresh, balls, shells = crowd(rng)
    stats = (0.0, 1.0)
    chance_ball = check.probability(radial_profiles(fresh, stats, balls, radius), rng.uniform(1, 2, len(balls)))
    chance_shell = check.probability(radial_profiles(fresh, stats, shells, radius), rng.uniform(1, 2, len(shells)))
    accuracy = (np.sum(chance_ball >= 0.5) + np.sum(chance_shell < 0.5)) / (len(balls) + len(shells))
    assert accuracy >= 0.9


def test_too_few_examples_give_no_check():
    features = np.random.default_rng(0).normal(size=(12, 4))
    assert fit_shape_check(features, np.ones(12), np.r_[np.ones(8), np.zeros(4)].astype(bool), 3) is None


def test_checks_survive_the_model_config_and_filter_only_their_class():
    rng = np.random.default_rng(2)
    radius = profile_radius(5)
    volume, balls, shells = crowd(rng)
    picks = np.concatenate([balls, shells])
    is_true = np.r_[np.ones(len(balls), bool), np.zeros(len(shells), bool)]
    check = fit_shape_check(radial_profiles(volume, (0.0, 1.0), picks, radius), np.ones(len(picks)), is_true, radius)
    config = {"shape_check": {"ball": check.to_json()}}
    (restored,) = checks_from_config(json.loads(json.dumps(config))).values()
    assert isinstance(restored, ShapeCheck) and restored == check
    # the same picks, once as the checked class and once as another class
    coords = Coords(["ball"] * len(picks) + ["other"] * len(picks), np.concatenate([picks, picks]),
                    np.ones(2 * len(picks)))
    kept = apply_checks(coords, volume, (0.0, 1.0), checks_from_config(config))
    assert np.sum(kept.names == "other") == len(picks)
    kept_balls = kept.subset(kept.names == "ball").xyz
    hits = sum(any(np.array_equal(point, ball) for ball in balls) for point in kept_balls)
    assert hits >= 0.9 * len(balls) and len(kept_balls) - hits <= 0.1 * len(shells)
    assert checks_from_config({}) == {}


def test_a_malformed_check_in_the_config_is_a_clear_error():
    check = ShapeCheck(2, [0.0] * 13, [1.0] * 13, [0.0] * 13, 0.0).to_json()
    assert checks_from_config({"shape_check": {"a": check}})["a"].radius == 2
    with pytest.raises(InputError, match="class a has"):
        checks_from_config({"shape_check": {"a": dict(check, weights=[0.0] * 5)}})
    with pytest.raises(InputError, match="class a is malformed"):
        checks_from_config({"shape_check": {"a": {"radius": 2}}})
