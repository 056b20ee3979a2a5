"""What a user may choose for `adapt`: the methods, the default (chosen by measurement) and
the budget. Torch-free, so the adapt protocol offers the core's own choices."""

METHODS = ("self-training", "dual-adversarial", "spectrum")
# The only method that cost neither domain F1 on both measured shifts (bench/README.md). On the
# realistic one spectrum gained more (target 0.739 vs 0.683, unadapted 0.656), but on the
# synthetic test's shift it cost the source 0.12 (0.936 -> 0.817).
DEFAULT_METHOD = "self-training"
DEFAULT_MINUTES = 15.0
DEFAULT_ADVERSARIAL_WEIGHT = 0.1  # lambda of the gradient reversal
