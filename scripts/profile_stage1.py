"""Where a stage-1 (VQGAN) training step spends its time, on the device at hand.

On an H100 the recipe's two-stream stage 1 made ~7 steps/s of batch 32 while a plain
(maskless) L1 sweep made ~24 (docs/training.md, "Second GPU session"); this script finds
out why before the next long run. It times the real training loop (``stage1.train``, the
recipe's sizes from ``recipe.plan``) for a few seconds in each variant, then profiles a
short two-stream run with torch.profiler (CPU and CUDA time per op), and times the pieces
the loop runs on the CPU between GPU steps (the random masks, the scene generator).

    PYTHONPATH=src python3 scripts/profile_stage1.py --device cuda --seconds 20 --out DIR
    PYTHONPATH=src python3 scripts/profile_stage1.py --device cpu --seconds 5 --tiny   # a check

Writes DIR/profile_stage1.json (steps/s per variant, ms per piece) and
DIR/profile_stage1.txt (the profiler's tables).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from napari_ilat.train import common as C
from napari_ilat.train import stage1
from napari_ilat.train.data import Stage1Images
from napari_ilat.train.recipe import RecipeConfig, first_stage_config, plan


def timed_run(c1: stage1.Stage1Config, m1, dev, prec, seconds: float) -> dict:
    """steps/s of the real loop over ``seconds`` of training (setup and the final validation
    are outside the clock: the run's own elapsed time is used)."""
    with tempfile.TemporaryDirectory() as d:
        c = replace(c1, budget_minutes=seconds / 60)
        r = stage1.train(c, m1, Path(d) / "run", device=dev, precision=prec, quiet=True)
        return {"steps": r["step"], "seconds": r["elapsed_s"], "steps_per_s": r["step"] / r["elapsed_s"]}


def ms(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default="pose")
    ap.add_argument("--seconds", type=float, default=20.0, help="training time per variant")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--tiny", action="store_true", help="a 32 px model (a quick check on a CPU)")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    dev = C.pick_device(args.device)
    prec = C.pick_precision("auto", dev)
    rc = RecipeConfig(data=args.data, workers=args.workers)
    if args.tiny:
        rc = replace(rc, resolution=32, ch=32, ch_mult=(1, 2, 2), z_channels=16, embed_dim=16, n_embed=64)
    p = plan(rc, dev)
    m1 = first_stage_config(rc)
    big = 10**9
    base = stage1.Stage1Config(
        data=args.data,
        steps=big,
        batch_size=p["batch1"],
        lr=p["stage1_lr"],
        warmup=100,
        workers=p["workers"],
        disc_weight=0.0,
        reuse=p["reuse1"],
        val_every=big,
        sample_every=big,
        save_every=big,
        log_every=50,
        val_size=4,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "precision": prec, "plan": p}
    variants = {
        "recipe (two-stream, masks on half the steps)": base,
        "plain (no masks)": replace(base, plain=True),
        "masks on every step": replace(base, mask_prob=1.0),
        "plain, no structural loss": replace(base, plain=True, perceptual_weight=0.0),
    }
    res["variants"] = {}
    for name, c in variants.items():
        res["variants"][name] = timed_run(c, m1, dev, prec, args.seconds)
        print(name, res["variants"][name], flush=True)

    # the CPU work between steps
    gen = torch.Generator().manual_seed(0)
    res["ms_masks_per_batch"] = ms(lambda: stage1._batch_masks(gen, p["batch1"], m1.resolution), 5)
    ds = Stage1Images(args.data, "train", m1.resolution, 1000)
    res["ms_scene_per_item"] = ms(lambda: ds[int(torch.randint(1000, (1,)))], 20)
    print({k: res[k] for k in ("ms_masks_per_batch", "ms_scene_per_item")}, flush=True)

    # profiler over a short two-stream run
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        timed_run(replace(base, mask_prob=1.0), m1, dev, prec, max(3.0, args.seconds / 4))
    tables = [prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)]
    if dev.type == "cuda":
        tables.append(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30))
    (out / "profile_stage1.txt").write_text("\n\n".join(tables) + "\n")
    (out / "profile_stage1.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
