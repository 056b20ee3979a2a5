"""Weights on disk: a model folder's kept network, and training's checkpoint."""
from pathlib import Path

import torch

from .errors import InputError
from .model import build_model
from .model_folder import CHECKPOINT_NAME, CONFIG_NAME, WEIGHTS_NAME, read_checked_config, replace_whole


def save_atomically(obj, path):
    """torch.save that a kill mid-write never leaves half done."""
    replace_whole(path, lambda temporary: torch.save(obj, temporary))


def save_weights(model, folder):
    save_atomically(model.state_dict(), Path(folder) / WEIGHTS_NAME)


def read_state(folder, device="cpu", missing="was the model trained to the end (or resumed)?"):
    """The state_dict in a folder's weights file; InputError (ending with `missing` when
    there is none) when it is absent or damaged."""
    weights = Path(folder) / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"{weights}: missing; {missing}")
    try:
        return torch.load(weights, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file; all mean "unreadable"
        raise InputError(f"{weights}: not a readable weights file ({type(error).__name__})") from None


def load_weights(model, folder, device="cpu"):
    """`model` with the kept weights of a model folder; InputError when they are missing,
    damaged or of another network."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    state = read_state(folder, device)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{weights}: does not match {folder / CONFIG_NAME} ({first_line})") from None
    return model


def load_model(model_dir, device="cpu"):
    """(model in eval mode on `device`, config) from a model folder."""
    config = read_checked_config(model_dir)
    model = load_weights(build_model(config), model_dir, device)
    return model.to(device).eval(), config


def save_checkpoint(folder, state):
    save_atomically(state, Path(folder) / CHECKPOINT_NAME)


def load_checkpoint(folder, device):
    """The checkpoint dict of a model folder, for --resume; InputError when absent or damaged."""
    path = Path(folder) / CHECKPOINT_NAME
    if not path.is_file():
        raise InputError(f"--resume: no {CHECKPOINT_NAME} in {folder}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        if "training" not in checkpoint["config"]:
            raise KeyError("training")
    except Exception as error:  # torch raises many kinds for a damaged file
        raise InputError(f"--resume: {path} is not a readable checkpoint "
                         f"({type(error).__name__}); train afresh without --resume") from None
    return checkpoint
