"""The engine: TS-VQGAN, LA transformer, cached sampler, conditions and edit().

Imports torch, numpy, scipy and scikit-image only, never another part of the package (nor Qt/napari).
One definition of each policy lives here: modes (modes.py), input rules (inputs.py), seeds
(editing.draw_seed), skeleton (skeleton.py), stroke rasteriser (sketch.py).
"""
