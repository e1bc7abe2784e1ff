"""Defaults that ``edit()``, the CLI and the widget share, in a module without torch so
that the CLI's argument parser and the widget can read them cheaply."""

# An edit samples each token from its 20 most likely codes by default (top-k, as taming's
# sampling scripts do). Measured on held-out cases with the bundled models (60 each, the
# same seeds; docs/benchmarks.md, "Sampling: top-k"): PSNR in the mask +1.0 dB on box
# holes, +1.1 dB on brush strokes and +0.2 dB on pose edits against sampling from the whole
# distribution, whose rare codes decode as speckle and stray colours. None (CLI and
# widget: 0) samples from the whole distribution.
DEFAULT_TOP_K = 20

# Classifier-free guidance on the pose or sketch is off by default (scale 1). Measured on 100
# validation cases per set with the bundled models (scripts/sweep_sampling.py;
# docs/benchmarks.md, "Sampling: guidance"): scales 1.5-5 gave no better pose edits (PSNR in
# the mask within 0.05 dB, the true pose beating another pair's pose less often) and worse
# sketch edits (the sketch's gain over no sketch +0.47 dB at 1, +0.17 at 2, -1.06 at 5).
DEFAULT_GUIDANCE = 1.0

# The context palette (engine/palette.py) allows a code only when its colour lies within
# PALETTE_TAU of at least this share of the known pixels around the mask (in a colour image;
# a grey one keeps the rule of any one pixel). Any one pixel let a thin shadow line admit the
# dark codes; 0.3 was chosen on validation box holes and brush strokes (docs/benchmarks.md,
# "Sampling: the context palette").
PALETTE_SUPPORT = 0.3
