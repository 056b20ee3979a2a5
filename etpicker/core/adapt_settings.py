"""What a user may choose for `adapt`: the methods, the default (chosen by measurement) and
the budget. Torch-free, so the adapt protocol offers the core's own choices."""

# Each method in a few words, for the CLI's and the protocol's help (core/adapt.py says how).
DESCRIPTIONS = {
    "self-training": "the model's confident picks on the new tomograms become weak labels",
    "dual-adversarial": "image-level and feature-level discriminators behind gradient reversal",
    "spectrum": "the training patches are moved part of the way to the new tomograms' power spectrum",
}
METHODS = tuple(DESCRIPTIONS)
# The only method that cost neither domain F1 on both measured shifts (bench/README.md).
# Spectrum matching gained more on the realistic one (target 0.729 vs 0.683, unadapted 0.656),
# but cost the synthetic test's source 0.066 after its 4 epochs (0.936 -> 0.870).
DEFAULT_METHOD = "self-training"
WHY_DEFAULT = ("the only one that cost neither domain F1 on both measured shifts; spectrum gained most on the "
               "realistic one")
DEFAULT_MINUTES = 15.0
DEFAULT_ADVERSARIAL_WEIGHT = 0.1  # lambda of the gradient reversal


def methods_help():
    """Every method and the default, as one sentence for a help text."""
    return "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items()) + \
        f". Default: {DEFAULT_METHOD}, {WHY_DEFAULT} (bench/README.md)."
