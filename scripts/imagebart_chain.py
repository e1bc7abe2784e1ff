"""What ImageBART's reverse chain does on upper-half completion (docs/imagebart.md,
"Sampling settings"), on held-out patches with the bundled (or a given) model.

    OMP_NUM_THREADS=1 python scripts/imagebart_chain.py --n 40 --chain --top-k 20,0,5
    OMP_NUM_THREADS=1 python scripts/imagebart_chain.py --n 100 --variants noisy,repeats2,mid0,mid0-last5
    OMP_NUM_THREADS=1 python scripts/imagebart_chain.py --n 100 \
        --variants skipT,skipT-k0,skipT-k5,skip2,skipT-noisy,skip2-k0

--chain: for each top-k, after every stage the share of masked tokens equal to the true code
x_0 and equal to the stage's own input (copied from the stage before); no compositing.
--variants: in-mask PSNR of whole edits (`edit(mode="imagebart")`, seamless, top-k 20)
with sampler variants the API does not expose, patched in for this measurement only:
noisy (the encoders read the known tokens at their trained noise level), repeats2 (one
forward-backward repeat per stage), mid0 (the whole distribution at every stage but the
last, top-k 20 there), mid0-last5 (the same with top-k 5 at the last stage), skipT (the chain
starts at x_{T-1} = uniform noise in the mask: the pure-noise stage, a decoder that in raster
order cannot see the known lower half, is skipped), skip2 (starts at x_{T-2}); -kK sets top-k K
at every stage (k0: the whole distribution), -noisy adds noisy known tokens; copycal (at the
stages with an input x_t, copying the input token keeps the probability the whole
distribution gives it, and only a redraw is truncated to top-k: top-k alone inflates the
copy, which carries stage T's noise through the chain). The same cases and seeds for every
row. Prints one JSON line per row.

    OMP_NUM_THREADS=1 python scripts/imagebart_chain.py --n 100 --variants copycal
"""

import argparse
import functools
import json

import numpy as np
import torch

import napari_ilat.engine.imagebart as IB
from napari_ilat import edit, load_model
from napari_ilat.data.datasets import image_to_tensor
from napari_ilat.engine.sampler import SamplingOptions
from napari_ilat.evaluation.imagebart import natural_cases
from napari_ilat.evaluation.metrics import PSNR_CAP, psnr


def chain_rates(model, cases, top_k):
    """{t: (share equal to x_0, share copied from x_t)} over the masked tokens, averaged."""
    vq, net = model.vqgan, model.bart
    g = net.config.grid
    known = torch.ones(g * g, dtype=torch.bool)
    known[: g * g // 2] = False
    rates = {}
    for seed, image, _, _, _ in cases:
        with torch.inference_mode():
            _, idx, _ = vq.quantize_latents(vq.encode(image_to_tensor(image)[None], None))
            x0 = idx.flatten()
            gen = torch.Generator().manual_seed(seed)
            opts = SamplingOptions(top_k=top_k)
            _, chain = IB.sample_imagebart(net, x0, known, options=opts, generator=gen, return_chain=True)
        prev = None
        for t, x in chain:
            xm = x[0][~known]
            r = rates.setdefault(t, ([], []))
            r[0].append((xm == x0[~known]).float().mean().item())
            if prev is not None:
                r[1].append((xm == prev).float().mean().item())
            prev = xm
    return {t: (float(np.mean(a)), float(np.mean(b)) if b else None) for t, (a, b) in rates.items()}


def _variant(name, first_stage, noise_stage=None):
    """(sample_imagebart, _denoise) replacements for one variant (``noise_stage``: stage T,
    which has no input to copy)."""
    sample, denoise = IB.sample_imagebart, IB._denoise
    if name == "copycal":

        def calibrated(stage, x_t, guide, masked, opts, generator, *a, **kw):
            if stage is noise_stage:
                return denoise(stage, x_t, guide, masked, opts, generator, *a, **kw)
            order, pick = iter(masked.tolist()), IB.pick  # _denoise picks once per masked token, in order

            def copy_or_redraw(logits, opts, generator):
                x_in, rows = x_t[:, next(order)], torch.arange(len(logits))
                p_copy = logits.float().softmax(-1)[rows, x_in]
                redraw = pick(logits.index_put((rows, x_in), torch.tensor(float("-inf"))), opts, generator)
                return torch.where(torch.rand(len(logits), generator=generator) < p_copy, x_in, redraw)

            IB.pick = copy_or_redraw
            try:
                return denoise(stage, x_t, guide, masked, opts, generator, *a, **kw)
            finally:
                IB.pick = pick

        return sample, calibrated
    if name == "noisy":
        return functools.partial(sample, noisy_known=True), denoise
    if name == "repeats2":
        return functools.partial(sample, repeats=2), denoise
    if name.startswith(("skipT", "skip2")):  # skipT[-kK][-noisy]: x_{T-1} = noise in the mask
        base, *rest = name.split("-")  # skip2: x_{T-2} = noise (only stages t <= T - 2 run)
        skipped = 2 if base == "skip2" else 1
        k = next((int(r[1:]) or None for r in rest if r.startswith("k")), 20)
        if "noisy" in rest:
            sample = functools.partial(sample, noisy_known=True)

        def skip(*a, **kw):
            plan = IB._stage_plan
            IB._stage_plan = lambda cfg, repeats: [p for p in plan(cfg, repeats) if p[0] <= cfg.n_stages - skipped]
            try:
                return sample(*a, **kw)
            finally:
                IB._stage_plan = plan

        def per_stage_k(stage, x_t, guide, masked, opts, *a, **kw):
            return denoise(stage, x_t, guide, masked, SamplingOptions(top_k=k, temperature=opts.temperature), *a, **kw)

        return skip, per_stage_k
    if name in ("mid0", "mid0-last5"):
        last = 5 if name == "mid0-last5" else 20

        def per_stage(stage, x_t, guide, masked, opts, *a, **kw):
            k = last if stage is first_stage else None
            return denoise(stage, x_t, guide, masked, SamplingOptions(top_k=k, temperature=opts.temperature), *a, **kw)

        return sample, per_stage
    raise SystemExit(f"unknown variant {name!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--model", default="natural-imagebart")
    ap.add_argument("--chain", action="store_true")
    ap.add_argument("--top-k", default="20,0,5", help="--chain: 0 = whole distribution")
    ap.add_argument("--variants", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    cases = list(natural_cases("upper_half", args.n, model.resolution, split=args.split))
    if args.chain:
        for k in (int(v) or None for v in args.top_k.split(",")):
            for t, (eq0, copied) in chain_rates(model, cases, k).items():
                copied = None if copied is None else round(copied, 3)  # stage T has no stage before it
                row = {"top_k": k, "stage": t, "equal_x0": round(eq0, 3), "copied": copied, "n": args.n}
                print(json.dumps(row), flush=True)
    saved = IB.sample_imagebart, IB._denoise
    for name in filter(None, ["default", *args.variants.split(",")] if args.variants else []):
        try:
            stages = model.bart.stages[0], model.bart.stage(model.bart.config.n_stages)
            IB.sample_imagebart, IB._denoise = saved if name == "default" else _variant(name, *stages)
            ps = [
                psnr(edit(s, m, seed=seed, mode="imagebart", model=model), t, m, cap=PSNR_CAP)
                for seed, s, t, m, _ in cases
            ]
        finally:
            IB.sample_imagebart, IB._denoise = saved
        print(
            json.dumps({"variant": name, "n": args.n, "split": args.split, "psnr_mask": round(float(np.mean(ps)), 3)})
        )


if __name__ == "__main__":
    main()
