"""A model folder and a tomogram in, particle centres out (segment + MP-NMS)."""
from pathlib import Path

import numpy as np
import torch

from .io import Coords, InputError, read_config
from .model import ResUNet3D
from .normalise import robust_stats
from .postprocess import mp_nms
from .tiling import segment

WEIGHTS_NAME = "weights.pt"


def resolve_device(name="auto"):
    """'auto' (first GPU when there is one, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name} requested but no CUDA GPU is available")
        if (device.index or 0) >= torch.cuda.device_count():
            raise InputError(f"device {name} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {name!r}; use auto, cpu or cuda:N")
    return device


def build_model(config):
    """The network described by a model config (untrained)."""
    return ResUNet3D(len(config["classes"]), widths=tuple(config["widths"]),
                     coordconv=config.get("coordconv", True), pyramid=config.get("pyramid", True))


def load_model(model_dir, device="cpu"):
    """(model in eval mode on `device`, config) from a model folder."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    missing = [key for key in ("classes", "diameters", "widths", "patch", "pad") if key not in config]
    if missing:
        raise InputError(f"{model_dir / 'config.json'}: missing {', '.join(missing)}")
    weights = model_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"{weights}: missing; was the model trained to the end (or resumed)?")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file; all mean "unreadable"
        raise InputError(f"{weights}: not a readable weights file ({type(error).__name__})") from None
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{weights}: does not match {model_dir / 'config.json'} ({first_line})") from None
    return model.to(device).eval(), config


def pick_tomogram(model, config, tomogram, *, pad=None, threshold=0.5, min_score=None, min_distance=None,
                  batch=4, device="cpu", probability_out=None):
    """Coords (x, y, z in voxels, class names from the config, MP-NMS scores) of one tomogram."""
    pad = config["pad"] if pad is None else pad
    centre, scale = robust_stats(tomogram.data, name=str(tomogram.path))
    class_map = segment(model, tomogram.data, centre, scale, config["patch"], pad, batch=batch, device=device,
                        threshold=threshold, probability_out=probability_out)
    class_ids, zyx, score = mp_nms(class_map, config["diameters"], min_score=min_score,
                                   min_distance=min_distance, device=device)
    names = np.asarray(config["classes"], dtype=str)[class_ids - 1] if len(class_ids) else np.array([], str)
    return Coords(names, zyx[:, ::-1].copy(), score)
