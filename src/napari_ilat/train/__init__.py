"""Training for napari-ilat (``napari-ilat train ...``; docs/training.md).

Modules, in reading order:

* :mod:`.common`      devices, mixed precision, torch.distributed set-up, checkpoints
                      (safetensors + JSON), progress bar, image grids;
* :mod:`.data`        training items for both stages (pose / natural / your own folder);
* :mod:`.losses`      offline structural "perceptual" loss, PatchGAN and hinge loss;
* :mod:`.stage1`      the two-stream VQGAN;
* :mod:`.first_stage` loading a first stage (run directory, napari-ilat model, taming ckpt);
* :mod:`.stage2`      the LA transformer on a frozen first stage;
* :mod:`.export`      run directories -> a loadable two-file model;
* :mod:`.evaluate`    held-out metrics (PSNR, perplexity, pose following, speed);
* :mod:`.cli`         the command line.

Nothing here is imported by the editing code paths; importing :mod:`napari_ilat.train`
costs nothing until a submodule is used.
"""
