"""train --init-model: a new network's starting weights from a pre-trained folder
(pretrain.py) or a trained model folder.

The encoder and decoder are copied; the head too when the folder is a trained model of
the same classes (fine-tuning it), else it keeps its fresh initialisation for the
classes. A folder of another architecture is refused with what differs.
"""
from pathlib import Path

from .errors import InputError
from .model import HEAD_PREFIX
from .model_folder import CONFIG_NAME, is_pretrained, read_init_config
from .model_store import read_state


def architecture(config, asked_widths=None):
    """The settings that fix a network's weights' shapes, from an init folder's config;
    InputError when the widths asked for (None: automatic) are others."""
    widths = [int(w) for w in config["widths"]]
    if asked_widths is not None and list(asked_widths) != widths:
        raise InputError(f"--widths {','.join(map(str, asked_widths))}: the initial model's network has widths "
                         f"{','.join(map(str, widths))}; leave --widths out")
    return {"widths": widths, "coordconv": bool(config.get("coordconv", True))}


def load_initial_weights(model, folder, classes, device="cpu"):
    """Copies the weights of `folder` into `model` (built with architecture(its config));
    returns a line saying what was copied. InputError when the folder is not one to start
    from, its weights are unreadable, or their shapes differ from the model's."""
    folder = Path(folder)
    config = read_init_config(folder)
    state = read_state(folder, device, "was the model (pre-)trained to the end?")
    same_classes = not is_pretrained(config) and list(config["classes"]) == list(classes)
    own = model.state_dict()
    wanted = [key for key in own if same_classes or not key.startswith(HEAD_PREFIX)]
    missing = [key for key in wanted if key not in state]
    mismatched = [key for key in wanted if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if missing or mismatched:
        key = (mismatched or missing)[0]
        found = "missing" if not mismatched else f"shape {tuple(state[key].shape)}, this network's {tuple(own[key].shape)}"
        raise InputError(f"--init-model {folder}: its weights do not fit this network ({key}: {found}); "
                         f"{folder / CONFIG_NAME} describes another architecture")
    model.load_state_dict({**own, **{key: state[key] for key in wanted}})
    kind = "pre-trained" if is_pretrained(config) else "trained"
    head = ("the head too (same classes)" if same_classes
            else f"the head re-initialised for {len(classes)} class(es)")
    return f"initial weights from the {kind} model {folder}: {len(wanted)} tensors copied, {head}"
