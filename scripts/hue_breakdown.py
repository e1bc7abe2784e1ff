"""Where a first stage loses hue: its reconstructions' hue error (evaluation.metrics.hue_error,
coloured pixels only) quantised and without the codebook, beside a per-patch mean colour
(what a perfect colour code at the token grid would keep), then by the reference's
saturation and by its hue sector.

    OMP_NUM_THREADS=1 python scripts/hue_breakdown.py --model natural --split validation --n 64

One JSON line per row: "decode" rows (quantised, continuous, patch_mean: mean over images of
each image's hue error, as `train eval` reports it, and PSNR), then "saturation" and
"hue_sector" rows for the quantised decode (pixel-weighted: the share of the coloured pixels
and their mean error).
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import load_model
from napari_ilat.evaluation.metrics import hue_differences, hue_error, psnr
from napari_ilat.train.data import Stage1Images


def _unit(t: torch.Tensor) -> np.ndarray:
    return ((t.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="natural")
    ap.add_argument("--data", default=None, help="pose or natural (default: natural, or pose for a pose model)")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    vq = model.vqgan
    cond = getattr(getattr(model.config, "transformer", None), "cond", None)  # ImageBART: natural
    data = args.data or ("pose" if cond == "pose" else "natural")
    ds = Stage1Images(data, args.split, vq.config.resolution, args.n)
    x = torch.stack([ds[i]["image"] for i in range(args.n)])
    f = vq.config.factor
    with torch.inference_mode():
        z = vq.encode(x)
        decodes = {"quantised": vq.decode(vq.quantize_latents(z)[0]), "continuous": vq.decode(z)}
    n, c, h, w = x.shape
    decodes["patch_mean"] = (
        x.reshape(n, c, h // f, f, w // f, f).mean((3, 5), keepdim=True).expand(-1, -1, -1, f, -1, f).reshape(x.shape)
    )
    ref = _unit(x)
    base = {"model": str(args.model), "split": args.split, "n": args.n}
    for name, out in decodes.items():
        rec = _unit(out)
        hues = [e for e in (hue_error(a, b) for a, b in zip(ref, rec, strict=True)) if e == e]
        psnrs = [psnr(b, a) for a, b in zip(ref, rec, strict=True)]
        row = {"row": "decode", "decode": name, "hue_error": round(float(np.mean(hues)), 1)}
        print(json.dumps({**base, **row, "psnr": round(float(np.mean(psnrs)), 2)}), flush=True)

    err, keep, ha = hue_differences(ref, _unit(decodes["quantised"]))
    groups = [
        ("saturation", f"{lo}-{hi}", (ha[..., 1] >= lo) & (ha[..., 1] < hi))
        for lo, hi in [(0.15, 0.25), (0.25, 0.4), (0.4, 0.6), (0.6, 1.01)]
    ]
    hue = ha[..., 0] * 360
    groups += [("hue_sector", f"{lo}-{lo + 60}", (hue >= lo) & (hue < lo + 60)) for lo in range(0, 360, 60)]
    for kind, label, sel in groups:
        k = keep & sel
        share = float(k.sum() / max(1, keep.sum()))
        mean = round(float(err[k].mean()), 1) if k.any() else None
        print(json.dumps({**base, "row": kind, kind: label, "share": round(share, 3), "hue_error": mean}), flush=True)


if __name__ == "__main__":
    main()
