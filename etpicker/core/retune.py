"""A trained model's picking rules tuned again on other annotated tomograms: each class's
score threshold and shape check, chosen as training chooses them on its validation data,
with the network unchanged. `adapt` tunes them on the source's annotated tomograms and on
copies of them restyled as the target (spectrum.py), so that they fit both looks."""
from pathlib import Path

from .device import resolve_device
from .model_folder import write_config
from .model_store import load_model
from .partial import PARTIAL, annotated_score
from .train_data import pair_by_stem, prepare_data
from .validation import CandidatePicker, fitted_checks, validation_candidates, validation_scores


def retune(model_dir, datasets, fit_checks=True, device="auto", log=print):
    """Re-tune the score thresholds (and the shape checks, with `fit_checks`) of the model in
    `model_dir` on `datasets`, each (tomograms, coordinate files, validation tomograms,
    validation coordinate files) held out as training held its data out (a block of each
    tomogram where no validation tomograms are given); writes its config.json and returns
    (validation F1 at the new thresholds, {class: (F1 without, F1 with its check)})."""
    model_dir = Path(model_dir)
    torch_device = resolve_device(device)
    model, config = load_model(model_dir, torch_device)
    training = config["training"]
    objective = annotated_score if training.get("annotations") == PARTIAL else None
    picker = CandidatePicker(model, config, config["pad"], training["batch"], torch_device, training.get("amp", "auto"),
                             objective=objective)
    pairs, sources, val_sets = [], [], []
    for tomos, coords, val_tomos, val_coords in datasets:
        these = pair_by_stem(tomos, coords, voxel_size=config["voxel_size"])
        val_pairs = pair_by_stem(val_tomos, val_coords, "--val-coords", config["voxel_size"]) if val_tomos else []
        these_sources, _, these_val_sets = prepare_data(these, val_pairs, config["classes"], training.get("val_fraction"),
                                                        config["patch"], max(picker.tolerances.values()))
        pairs += these
        sources += these_sources
        val_sets += these_val_sets
    candidates = validation_candidates(picker, val_sets)
    _, _, f1, min_scores = validation_scores(picker, candidates)
    before = config.get("relative_min_score", {})
    log("score thresholds re-tuned (x a fully segmented ball's score): "
        + ", ".join(f"{name} {before.get(name, '-')} -> {value:g}" for name, value in min_scores.items())
        + f" (validation {'F1' if objective is None else 'score'} {f1:.3f})")
    config["relative_min_score"] = min_scores
    check_f1s = {}
    if fit_checks:
        checks, check_f1s = fitted_checks(picker, pairs, sources, val_sets, log, candidates)
        config.update(checks)
    write_config(model_dir, config)
    return f1, check_f1s
