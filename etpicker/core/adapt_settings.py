"""What a user may choose for `adapt`: the methods, the default (chosen by measurement) and
the budget. Torch-free, so the adapt protocol offers the core's own choices."""

# Each method in a few words, for the CLI's and the protocol's help (core/adapt.py says how).
DESCRIPTIONS = {
    "self-training": "the model's confident picks on the new tomograms become weak labels",
    "dual-adversarial": "image-level and feature-level discriminators behind gradient reversal",
    "spectrum": "the training patches are moved part of the way to the new tomograms' power spectrum",
}
METHODS = tuple(DESCRIPTIONS)
# The only method that cost neither domain F1 on any measured shift (bench/README.md). With
# the picking rules re-tuned after it, it gained most on the realistic SNR shift (target
# 0.683 -> 0.882, past the target-trained 0.831); spectrum matching gained most where every
# imaging condition changed (0.656 -> 0.753 vs 0.698), but cost the synthetic test's source
# 0.066 (0.936 -> 0.870).
DEFAULT_METHOD = "self-training"
WHY_DEFAULT = ("the only one that cost neither domain F1 on any measured shift, and the best on the realistic SNR "
               "shift; spectrum gained most where every imaging condition changed")
DEFAULT_MINUTES = 15.0
DEFAULT_ADVERSARIAL_WEIGHT = 0.1  # lambda of the gradient reversal


def methods_help():
    """Every method and the default, as one sentence for a help text."""
    return "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items()) + \
        f". Default: {DEFAULT_METHOD}, {WHY_DEFAULT} (bench/README.md)."
