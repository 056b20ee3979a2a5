"""What a user may choose for `adapt`: the methods, the default (the best measured) and
the budget. Torch-free, so the adapt protocol offers the core's own choices."""

METHODS = ("self-training", "dual-adversarial", "spectrum")
# best measured on the shift cases of bench/bench_adapt.py (bench/README.md)
DEFAULT_METHOD = "self-training"
DEFAULT_MINUTES = 15.0
DEFAULT_ADVERSARIAL_WEIGHT = 0.1  # lambda of the gradient reversal
