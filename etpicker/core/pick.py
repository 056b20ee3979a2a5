"""A model and a tomogram in, particle centres out (segment + MP-NMS + shape checks)."""
import numpy as np
import torch

from .device import autocast_dtype
from .io import Coords
from .normalise import robust_stats
from .postprocess import mp_nms
from .profile import Profile
from .settings import DEFAULT_RELATIVE_MIN_SCORE, voxel_sizes_agree
from .shape_check import CANDIDATE_RELATIVE_MIN_SCORE, apply_checks, checks_from_config
from .tiling import model_tiling, segment


def voxel_size_warning(tomogram, config):
    """A warning line when the tomogram's voxel size (its header's unless the caller set it)
    is missing or not the model's, else None. Only a warning: headers are often wrong."""
    trained = float(config["voxel_size"])
    if tomogram.voxel_size is None:
        return (f"warning: the header of {tomogram.path} gives no voxel size; it is picked as if at the "
                f"model's {trained:g} Å/voxel")
    if voxel_sizes_agree([tomogram.voxel_size, trained]):
        return None
    return (f"warning: {tomogram.path} is at {tomogram.voxel_size:g} Å/voxel, the model at {trained:g}: "
            f"rescale the tomogram to {trained:g} Å/voxel unless its header (or --voxel-size) is wrong")


def pick_tomogram(model, config, tomogram, *, pad=None, tile=None, threshold=0.5, min_score=None, min_distance=None,
                  batch=4, device="cpu", probability_out=None, relative_min_score=None, amp="auto", stats=None,
                  shape_check=True, profile=None):
    """Coords (x, y, z in voxels, class names from the config, MP-NMS scores) of one tomogram.

    Without `min_score` (absolute), maxima below `relative_min_score` x a fully segmented
    ball's score are dropped: one value, or {class: value}; its default is what training
    tuned on validation data. A class with a shape check in the config (and `shape_check`
    true) is picked at the low candidate level instead and its check decides (a likeness
    check only removes picks above the class's threshold).
    `tile`: the tiles' edge (voxels), None for the automatic tiling (tiling.model_tiling).
    `stats`: the tomogram's (centre, scale) when already known. `profile` (a Profile) gets
    the seconds of each step."""
    pad = config["pad"] if pad is None else pad
    checks = checks_from_config(config) if shape_check else {}
    if relative_min_score is None:
        relative_min_score = config.get("relative_min_score", DEFAULT_RELATIVE_MIN_SCORE)
    if not isinstance(relative_min_score, dict):
        relative_min_score = {name: relative_min_score for name in config["classes"]}
    relative_min_score = [CANDIDATE_RELATIVE_MIN_SCORE if any(check.decides_score for check in checks.get(name, ()))
                          else relative_min_score.get(name, DEFAULT_RELATIVE_MIN_SCORE) for name in config["classes"]]
    profile = profile or Profile()
    with profile.step("statistics"):
        centre, scale = stats or robust_stats(tomogram.data, name=str(tomogram.path))
    device = torch.device(device)
    tile, batch = model_tiling(config, tomogram.data.shape, pad, batch, device, tile)
    class_map = segment(model, tomogram.data, centre, scale, tile, pad, batch=batch, device=device, threshold=threshold,
                        probability_out=probability_out, amp_dtype=autocast_dtype(device, amp),
                        description=f"segmenting {tomogram.stem}", profile=profile)
    with profile.step("MP-NMS"):
        class_ids, zyx, score = mp_nms(class_map, config["diameters"], min_score=min_score,
                                       min_distance=min_distance, device=device,
                                       relative_min_score=relative_min_score)
    names = np.asarray(config["classes"], dtype=str)[class_ids - 1] if len(class_ids) else np.array([], str)
    with profile.step("shape check"):
        return apply_checks(Coords(names, zyx[:, ::-1].copy(), score), tomogram.data, (centre, scale), checks)
