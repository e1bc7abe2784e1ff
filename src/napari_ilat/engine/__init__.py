"""The engine: TS-VQGAN, LA transformer, cached sampler, conditions and edit().

Imports torch, numpy and scipy only, never another part of the package (nor Qt/napari).
"""
