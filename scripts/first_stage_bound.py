"""How much of an edit's error is the first stage's, and how much the transformer's.

For held-out cases, the *code bound*: the ground truth's own codes (plain encoder, full
image) decoded and composited into the input's mask as edit() does (seamless, and pasted),
i.e. what a transformer that predicted every masked code exactly would give through this
first stage; beside it the bundled model's own edit (default sampling), on the same cases.
The gap between the two is the transformer's; the gap between the bound and a perfect
result is the first stage's (docs/benchmarks.md, "Where the error is").

    OMP_NUM_THREADS=1 python scripts/first_stage_bound.py --n 200 --sets pose,box,brush

PSNR in the mask, capped at 50 dB (a flat hole reproduced exactly is infinite). Prints one
JSON line per set.

    OMP_NUM_THREADS=1 python scripts/first_stage_bound.py --sets none --demo docs/images/demo_code_bound.png

writes the README's edit (the pose sample, `napari-ilat demo`) the same way: the true image,
its own codes decoded (seamless, pasted), and the bundled pose model's edit, side by side;
``--scene N``: test scene N's edit pair instead (docs/images/demo_code_bound.png is scene 5,
the pose sample until the twenty-first session).
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.engine.blend import seamless
from napari_ilat.evaluation.metrics import PSNR_CAP, psnr
from napari_ilat.evaluation.quality import box_cases, natural_cases, pose_cases

CASES = {
    "pose": (lambda n, sp: pose_cases(n, 128, sp), "pose"),
    "box": (lambda n, sp: box_cases(n, 128, sp), "natural"),
    "brush": (lambda n, sp: natural_cases(n, 128, False, sp), "natural"),
}


def code_bound(vq, source, target, mask):
    """(seamless, pasted) uint8 edits made of the target's own codes."""
    x = torch.from_numpy(target.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    z_q, _, _ = vq.quantize_latents(vq.encode(x))
    rec = ((vq.decode(z_q) + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).double().numpy()
    src = source.astype(np.float64) / 255
    outs = []
    for gen in (seamless(rec, src, mask), rec):
        out = src.copy()
        out[mask] = gen[mask]
        outs.append(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8))
    return outs


def demo(path, scene=None, scale: int = 3):
    """The pose sample's demo edit (or test scene ``scene``'s): truth | code bound seamless |
    code bound pasted | the model's."""
    from skimage.io import imsave

    from napari_ilat.cli.demo import DEMO_SEED
    from napari_ilat.plugin.sample_data import pose_sample_pair

    pair = pose_sample_pair() if scene is None else pose_sample_pair(scene)
    model = load_model("pose")
    with torch.inference_mode():
        panels = [pair.target, *code_bound(model.vqgan, pair.source, pair.target, pair.mask)]
        panels.append(edit(pair.source, pair.mask, pair.target_pose, model=model, seed=DEMO_SEED))
    scores = [round(psnr(p, pair.target, pair.mask, cap=PSNR_CAP), 2) for p in panels[1:]]
    gap = np.full((pair.target.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([q for p in panels for q in (p, gap)][:-1], axis=1)
    imsave(path, np.repeat(np.repeat(row, scale, 0), scale, 1), check_contrast=False)
    keys = ("code_bound_seamless", "code_bound_pasted", "model_edit")
    print(
        json.dumps({"set": "demo", "scene": pair.seed, "image": str(path), **dict(zip(keys, scores, strict=True))}),
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sets", default="pose,box,brush")
    ap.add_argument("--split", default="test")
    ap.add_argument("--demo", default=None, help="also write the README's edit this way to this PNG")
    ap.add_argument("--scene", type=int, default=None, help="--demo: this test scene's edit (default: the pose sample)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.demo:
        demo(args.demo, args.scene)
    for name in filter(None, args.sets.replace("none", "").split(",")):
        make_cases, model_name = CASES[name]
        model = load_model(model_name)
        rows = []
        with torch.inference_mode():
            for seed, src, tgt, mask, cond in make_cases(args.n, args.split):
                bound_seamless, bound_pasted = code_bound(model.vqgan, src, tgt, mask)
                own = edit(src, mask, model=model, seed=seed, **cond)
                rows.append([psnr(o, tgt, mask, cap=PSNR_CAP) for o in (bound_seamless, bound_pasted, own)])
        m = np.mean(rows, 0)
        print(
            json.dumps(
                {
                    "set": name,
                    "split": args.split,
                    "n": args.n,
                    "code_bound_seamless": round(float(m[0]), 2),
                    "code_bound_pasted": round(float(m[1]), 2),
                    "model_edit": round(float(m[2]), 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
