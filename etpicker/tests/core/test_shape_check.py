import json

import numpy as np
import pytest

from etpicker.core.io import Coords, InputError
from scipy import ndimage
from scipy.spatial.transform import Rotation

from etpicker.core.shape_check import (CANDIDATES_PER_PARTICLE, LIKENESS_MIN_EXAMPLES, MAX_DESCRIBED, LikenessCheck,
                                       ShapeCheck, apply_checks, checks_from_config, checks_to_config, described,
                                       feature_count, fit_likeness_check, fit_shape_check, profile_radius,
                                       shape_features)
from etpicker.core.validation import _rescored

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


def test_features_do_not_depend_on_the_particle_orientation():
    rng = np.random.default_rng(0)
    volume = ndimage.gaussian_filter(rng.normal(size=(25, 25, 25)), 1.0).astype(np.float32)
    centre, radius = [[12, 12, 12]], 6
    original = shape_features(volume, (0.0, 1.0), centre, radius)
    profiles = 4 * (radius + 1)  # the radial profiles come first, then the shell harmonics
    assert original.shape == (1, feature_count(radius, 8))
    for turned in (np.rot90(volume, k=1, axes=(1, 2)),  # a quarter turn about z, around the central voxel
                   np.transpose(volume, (2, 1, 0))):  # z and x swapped: a half turn and a mirror
        features = shape_features(turned, (0.0, 1.0), centre, radius)
        np.testing.assert_allclose(features[:, :profiles], original[:, :profiles], rtol=1e-5, atol=1e-5)
        # the harmonics sample each sphere at points that do not turn with it: nearly equal
        assert np.abs(features[:, profiles:] - original[:, profiles:]).max() < 0.03 * original[:, profiles:].max()


def test_profiles_standardise_and_read_past_the_border_as_the_mean():
    volume = np.full((9, 9, 9), 7.0, np.float32)
    volume[4, 4, 4] = 9.0
    features = shape_features(volume, (7.0, 2.0), [[4, 4, 4], [0, 0, 0]], 3, degrees=0)
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
    check = fit_shape_check(shape_features(volume, (0.0, 1.0), picks, radius), scores, is_true, radius)
    fresh, balls, shells = crowd(rng)
    stats = (0.0, 1.0)
    chance_ball = check.probability(shape_features(fresh, stats, balls, radius), rng.uniform(1, 2, len(balls)))
    chance_shell = check.probability(shape_features(fresh, stats, shells, radius), rng.uniform(1, 2, len(shells)))
    accuracy = (np.sum(chance_ball >= 0.5) + np.sum(chance_shell < 0.5)) / (len(balls) + len(shells))
    assert accuracy >= 0.9


def blob_groups(rng, layout, n, noise=0.3):
    """A volume of `n` groups of four Gaussian blobs 4 voxels from each group's centre, in
    random orientations: `layout` "tetrahedron" or "square". Both kinds have the same radial
    profile, and the same spread in every shell; only the blobs' arrangement differs."""
    corners = {"tetrahedron": np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3),
               "square": np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], float)}[layout]
    side = 16
    volume = np.zeros((side, side * n, side), np.float32)
    centres = []
    for i in range(n):
        centre = np.array([side / 2, side * i + side / 2, side / 2])
        for point in Rotation.random(random_state=rng).apply(4 * corners) + centre:
            volume[tuple(np.rint(point).astype(int))] += 1.0
        centres.append(centre[::-1])
    volume = ndimage.gaussian_filter(volume, 1.2) / 0.03 + rng.normal(0, noise, volume.shape)
    return volume.astype(np.float32), np.array(centres)


def test_shell_harmonics_tell_apart_shapes_that_profiles_cannot():
    """Why the features hold the harmonics: the same four blobs as a tetrahedron (targets) or
    as a square (look-alikes). A check fitted with harmonics tells them apart in a new volume;
    one on the profiles alone does far worse (0.66-0.75 over five seeds)."""
    rng = np.random.default_rng(3)
    accuracy = {}
    for degrees in (0, 8):
        (targets, at), (others, ao) = blob_groups(rng, "tetrahedron", 40), blob_groups(rng, "square", 40)
        features = np.concatenate([shape_features(targets, (0.0, 1.0), at, 6, degrees),
                                   shape_features(others, (0.0, 1.0), ao, 6, degrees)])
        check = fit_shape_check(features, np.ones(80), np.r_[np.ones(40), np.zeros(40)].astype(bool), 6, degrees)
        (targets, at), (others, ao) = blob_groups(rng, "tetrahedron", 40), blob_groups(rng, "square", 40)
        right = (np.sum(check.probability(check.features(targets, (0.0, 1.0), at), np.ones(40)) >= 0.5)
                 + np.sum(check.probability(check.features(others, (0.0, 1.0), ao), np.ones(40)) < 0.5))
        accuracy[degrees] = right / 80
    assert accuracy[8] >= 0.95 and accuracy[8] - accuracy[0] >= 0.2, accuracy


def test_too_few_examples_give_no_check():
    features = np.random.default_rng(0).normal(size=(12, 4))
    assert fit_shape_check(features, np.ones(12), np.r_[np.ones(8), np.zeros(4)].astype(bool), 3) is None


def test_checks_survive_the_model_config_and_filter_only_their_class():
    rng = np.random.default_rng(2)
    radius = profile_radius(5)
    volume, balls, shells = crowd(rng)
    picks = np.concatenate([balls, shells])
    is_true = np.r_[np.ones(len(balls), bool), np.zeros(len(shells), bool)]
    check = fit_shape_check(shape_features(volume, (0.0, 1.0), picks, radius), np.ones(len(picks)), is_true, radius)
    config = {"shape_check": {"ball": check.to_json()}}
    assert checks_from_config(json.loads(json.dumps(config))) == {"ball": [check]}
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
    del check["degrees"]  # as written before the shell harmonics: profiles only
    assert checks_from_config({"shape_check": {"a": check}})["a"][0].degrees == 0
    with pytest.raises(InputError, match="not the 21 of radius 2 and degrees 8"):
        checks_from_config({"shape_check": {"a": dict(check, degrees=8)}})
    with pytest.raises(InputError, match="class a has"):
        checks_from_config({"shape_check": {"a": dict(check, weights=[0.0] * 5)}})
    with pytest.raises(InputError, match="class a is malformed"):
        checks_from_config({"shape_check": {"a": {"radius": 2}}})


def test_a_likeness_check_learns_a_class_from_its_annotated_particles_alone():
    """For a class with no false training picks to learn from: fitted on the balls only, it
    keeps a new volume's balls and rejects look-alikes of their size it has never seen."""
    rng = np.random.default_rng(4)
    radius = profile_radius(5)
    volume, balls, _ = crowd(rng, n_each=LIKENESS_MIN_EXAMPLES + 5)
    check = fit_likeness_check(shape_features(volume, (0.0, 1.0), balls, radius), radius)
    config = checks_to_config({"ball": [check]})
    assert config == {"shape_check": {}, "likeness_check": {"ball": check.to_json()}}
    (restored,) = checks_from_config(json.loads(json.dumps(config)))["ball"]
    assert isinstance(restored, LikenessCheck) and restored == check and not restored.decides_score
    fresh, balls, shells = crowd(rng)
    picks = np.concatenate([balls, shells])
    coords = Coords(["ball"] * len(picks) + ["other"] * len(picks), np.concatenate([picks, picks]),
                    np.ones(2 * len(picks)))
    kept = apply_checks(coords, fresh, (0.0, 1.0), checks_from_config(config))
    assert np.sum(kept.names == "other") == len(picks)  # another class is not its business
    kept_balls = kept.subset(kept.names == "ball").xyz
    hits = sum(any(np.array_equal(point, ball) for ball in balls) for point in kept_balls)
    assert hits >= 0.9 * len(balls) and len(kept_balls) - hits <= 0.2 * len(shells)


def test_a_likeness_check_needs_enough_particles_and_a_well_formed_config():
    features = np.random.default_rng(0).normal(size=(LIKENESS_MIN_EXAMPLES - 1, feature_count(2, 8)))
    assert fit_likeness_check(features, 2) is None
    check = fit_likeness_check(np.r_[features, features[:1]], 2).to_json()
    assert checks_from_config({"likeness_check": {"a": check}})["a"][0].cut > 0
    with pytest.raises(InputError, match="likeness check of class a has .* not the 20 of radius 2 and degrees 8"):
        checks_from_config({"likeness_check": {"a": dict(check, mean=[0.0] * 21)}})
    with pytest.raises(InputError, match="likeness check of class a is malformed"):
        checks_from_config({"likeness_check": {"a": dict(check, cut=None)}})


def test_checks_describe_only_the_strongest_of_an_untrained_networks_flood_of_candidates():
    # thousands of weak candidates would cost minutes of features and stop training early
    scores = np.random.default_rng(0).random(5000)
    few = described(scores, n_annotated=10)
    assert len(few) == MAX_DESCRIBED
    assert scores[few].min() > np.delete(scores, few).max()
    assert np.all(np.diff(few) > 0)  # in the candidates' order
    many = described(scores, n_annotated=400)
    assert len(many) == CANDIDATES_PER_PARTICLE * 400
    assert np.array_equal(described(scores[:50], n_annotated=0), np.arange(50))


def test_a_check_rejects_the_candidates_it_did_not_judge():
    picks = Coords(np.array(["a", "b", "a", "a"]), np.zeros((4, 3)), np.array([0.9, 0.5, 0.8, 0.1]))
    values = np.array([1.0, 2.0, 3.0, 4.0])
    judged = np.array([0, 1])  # the first two of class a's three picks
    rows = _rescored([(picks, values, None)], [(judged, np.zeros((2, 1)))], "a",
                     lambda features, old, network: old * 10)
    assert np.array_equal(rows[0][1], [10.0, 2.0, 30.0, -np.inf])
    assert np.array_equal(values, [1.0, 2.0, 3.0, 4.0])  # the caller's values untouched
