"""Stage 1: train the two-stream VQGAN (DESIGN.md section 2).

loss = L1 + w_p * structural ("perceptual", see losses.py) + codebook/commitment (beta 0.25,
returned by the quantizer) + w_d * hinge PatchGAN generator loss (from ``disc_start`` on)
+ w_h * hue (the chroma direction's error on coloured pixels, see losses.py; off by default).

A fraction ``mask_prob`` of the steps runs the encoder in two-stream mode with random masks
(``VQModel.forward(x, mask)``), so the decoder learns to decode tokens computed without the
masked pixels (the tokens that survive an edit). ``--plain`` never passes a mask (for the
iLAT* ablation's first stage).

``decoder_only`` (a warm start only) trains the decoder (and the 1x1 convolution before it)
and freezes the encoder and the codebook: every image keeps its codes, so a transformer or
ImageBART model trained on them stays valid with the new decoder (`train export
--first-stage`). Masked steps then decode as an edit does: codebook entries inside the
token mask, the two-stream encoder's continuous latents outside it.

Dead codebook entries (unused over ``restart_every`` steps) are re-initialised from encoder
outputs of the current batch: short runs otherwise end with a few dozen live codes.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from napari_ilat.data import random_mask
from napari_ilat.engine.vqgan import VQGANConfig, VQModel
from napari_ilat.evaluation.metrics import hue_error, psnr, thumbnail_code
from napari_ilat.train import common as C
from napari_ilat.train.data import Stage1Images, loader
from napari_ilat.train.losses import PatchDiscriminator, hinge_d_loss, hue_loss, structural_loss


@dataclass
class Stage1Config:
    data: str = "pose"  # "pose", "natural" or a folder of images
    steps: int = 20000
    batch_size: int = 16  # per process
    lr: float = 2e-4
    warmup: int = 200
    crop: int = 0  # train on random crops of this size (0 = whole images): cheaper steps
    mask_prob: float = 0.5  # fraction of steps with two-stream random masks
    plain: bool = False  # never pass masks (first stage for the iLAT* ablation)
    perceptual_weight: float = 1.0
    disc_start: int = 10000  # step at which the PatchGAN loss starts (taming starts late too)
    disc_weight: float = 0.1
    hue_weight: float = 0.0  # weight of losses.hue_loss (0 = off, as every bundled model was trained)
    restart_every: int = 200  # 0 = never re-initialise dead codes
    # the extra restarts at steps 1-100 that initialise a fresh codebook from the data; train()
    # turns them off for a warm start (``init_weights``: its codes already carry a
    # transformer's meaning), and the run record keeps that for --resume
    early_restarts: bool = True
    log_every: int = 10
    val_every: int = 500
    sample_every: int = 500
    save_every: int = 200
    val_size: int = 64
    seed: int = 0
    workers: int = 0
    train_length: int = 1_000_000  # items per epoch (generated on the fly)
    budget_minutes: float = 0.0  # > 0: the schedule spans this much training time, then stop
    # optimisation steps per generated batch, each on a random flip / transpose of it: where
    # the data generator cannot keep up with the device (a GPU), reuse beats waiting
    reuse: int = 1
    decoder_only: bool = False  # freeze the encoder and the codebook (needs a warm start)


class _Decoder(nn.Module):
    """The trainable part of a decoder-only run (what DDP wraps): latents -> image."""

    def __init__(self, vq: VQModel):
        super().__init__()
        self.post_quant_conv, self.decoder = vq.post_quant_conv, vq.decoder

    def forward(self, z):
        return self.decoder(self.post_quant_conv(z))


@torch.no_grad()
def _frozen_codes(vq: VQModel, x: torch.Tensor, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder input, indices) of a decoder-only step: the codes everywhere, or with a mask
    what an edit decodes (codes inside the token mask, continuous latents outside)."""
    z = vq.encode(x, mask)
    z_q, idx, _ = vq.quantize_latents(z)
    if mask is not None:
        z_q = torch.where(vq.token_mask(mask)[:, None].to(z.device), z_q, z)
    return z_q, idx


def _batch_masks(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Random brush / box / limb masks covering 5-50% each, from the loop's generator."""
    out = np.zeros((n, 1, size, size), bool)
    for i in range(n):
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
        out[i, 0] = random_mask(rng, (size, size), None, rng.uniform(0.05, 0.5))
    return torch.from_numpy(out)


def _random_crop(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    if size <= 0 or size >= x.shape[-1]:
        return x
    out = []
    for img in x:
        r, c = (int(v) for v in torch.randint(0, x.shape[-1] - size + 1, (2,), generator=gen))
        out.append(img[:, r : r + size, c : c + size])
    return torch.stack(out)


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips / transposes of a (B, C, H, W) square batch."""
    if k & 4:
        x = x.transpose(-1, -2)
    return torch.rot90(x, k & 3, dims=(-2, -1))


@torch.no_grad()
def evaluate_reconstruction(
    vq: VQModel, data: str, resolution: int, n: int, split="validation", batch: int = 16, device="cpu"
) -> dict:
    """Mean PSNR (dB, [0,1] images, 10 log10(1/MSE)) of full quantized reconstructions,
    the fraction of codebook entries used, and (``thumbnail_psnr``) the mean PSNR of the
    naive code with the same bit budget (:func:`napari_ilat.evaluation.metrics.thumbnail_code`) on
    the same images, as a yardstick."""
    ds = Stage1Images(data, split, resolution, n)
    vq.eval()
    psnrs, hues, used = [], [], torch.zeros(vq.config.n_embed, dtype=torch.bool)
    for i in range(0, n, batch):
        x = torch.stack([ds[j]["image"] for j in range(i, min(n, i + batch))]).to(device)
        xrec, _, idx = vq(x)
        mse = (((xrec.clamp(-1, 1) - x) / 2) ** 2).flatten(1).mean(1)
        psnrs += (10 * torch.log10(1 / mse.clamp_min(1e-10))).tolist()
        used[idx.flatten().cpu()] = True
        if x.shape[1] == 3:  # does the code keep colours? (a learnt warm palette did not)
            to_np = lambda t: ((t.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
            hues += [hue_error(a, b) for a, b in zip(to_np(x), to_np(xrec), strict=True)]
    hues = [h for h in hues if h == h]  # images without coloured pixels have no hue
    return {
        "psnr": float(np.mean(psnrs)),
        "hue_error": float(np.mean(hues)) if hues else float("nan"),
        "codebook_usage": float(used.float().mean()),
        "thumbnail_psnr": naive_code_psnr(data, split, resolution, n, vq.config.factor, vq.config.n_embed),
    }


@functools.lru_cache(maxsize=8)
def naive_code_psnr(data: str, split: str, resolution: int, n: int, factor: int, n_values: int) -> float:
    """Mean PSNR of :func:`napari_ilat.evaluation.metrics.thumbnail_code` on the images
    :func:`evaluate_reconstruction` uses. It depends on the images and the bit budget only,
    so a run computes it once, not at every validation."""
    ds = Stage1Images(data, split, resolution, n)
    imgs = (((ds[j]["image"].double().permute(1, 2, 0) + 1) / 2).numpy() for j in range(n))
    return float(np.mean([psnr(thumbnail_code(img, factor, n_values), img) for img in imgs]))


@torch.no_grad()
def sample_grid(vq: VQModel, data: str, resolution: int, path: Path, device, n: int = 8):
    """Rows: input, plain reconstruction, masked input, two-stream edit-style decode
    (codebook entries inside the mask, continuous latents outside)."""
    ds = Stage1Images(data, "validation", resolution, n)
    x = torch.stack([ds[i]["image"] for i in range(n)]).to(device)
    g = torch.Generator().manual_seed(0)
    m = _batch_masks(g, n, resolution).to(device)
    vq.eval()
    rec = vq(x)[0]
    z = vq.encode(x, m)
    _, idx, _ = vq.quantize_latents(z)
    ts = vq.decode_tokens(idx, z, vq.token_mask(m))
    rows = [C.to_uint8(x), C.to_uint8(rec), C.to_uint8(torch.where(m, 0.0, x)), C.to_uint8(ts)]
    C.save_grid(rows, path)


def train(
    cfg: Stage1Config,
    model_cfg: VQGANConfig,
    out,
    *,
    resume=False,
    device="auto",
    precision="auto",
    stop_at: int | None = None,
    time_limit: float | None = None,
    init_weights: dict | None = None,
    quiet=False,
) -> dict:
    """Train (or resume) a first stage in ``out``; returns the final run record."""
    out = Path(out)
    dev = C.pick_device(device)
    prec = C.pick_precision(precision, dev)
    D = C.Dist(dev)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        run, cfg = C.read_resume(out, "vqgan", Stage1Config, cfg)
        model_cfg = VQGANConfig.from_dict(run["model"])
    gen = C.seed_everything(cfg.seed, D.rank)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    vq = VQModel(model_cfg).to(dev)
    disc = PatchDiscriminator(model_cfg.out_ch, ndf=max(32, model_cfg.ch), n_layers=2).to(dev)
    C.seed_everything(cfg.seed, D.rank)  # per-rank global RNG for anything stochastic
    if init_weights is not None:
        vq.load_state_dict(init_weights, strict=True)
        cfg = replace(cfg, early_restarts=False)
    if cfg.decoder_only:
        if init_weights is None and not resume:
            raise ValueError("a decoder-only run needs a first stage to start from (--init)")
        # the codes must not move: no restarts, no gradient into the encoder or the codebook
        cfg = replace(cfg, early_restarts=False, restart_every=0)
        vq.requires_grad_(False)
        dec = _Decoder(vq).requires_grad_(True)
    trained = dec if cfg.decoder_only else vq
    betas = (0.5, 0.9)  # taming's VQGAN betas
    opt = torch.optim.Adam(trained.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=betas)
    scaler = C.grad_scaler(prec)
    start, history, elapsed = 0, [], 0.0
    if resume:
        start, history, elapsed = C.restore(
            out,
            D,
            modules={"vqgan": vq, "disc": disc},
            optimizers={"vqgan": opt, "disc": opt_d},
            generator=gen,
            scaler=scaler,
        )
    trained_ddp = DDP(trained, device_ids=[dev.index] if dev.type == "cuda" else None) if D.enabled else trained
    disc_ddp = DDP(disc, device_ids=[dev.index] if dev.type == "cuda" else None) if D.enabled else disc

    ds = Stage1Images(cfg.data, "train", model_cfg.resolution, cfg.train_length)
    reuse = max(1, cfg.reuse)
    # batch i serves steps i*reuse .. i*reuse + reuse - 1 (a resumed run refetches its batch)
    batches = loader(
        ds, C.batch_indices(len(ds), cfg.batch_size, cfg.seed, D.rank, D.world, start // reuse), cfg.workers
    )
    xb = None
    bar = C.Progress(cfg.steps, start, enabled=D.main and not quiet, every=cfg.log_every)
    usage = torch.zeros(model_cfg.n_embed, device=dev)
    t0 = time.time()
    step = start

    def run_record():
        elapsed_s = elapsed + time.time() - t0
        return C.run_record("vqgan", step, model_cfg.to_dict(), cfg, D, dev, prec, history, elapsed_s)

    def save():
        C.save_all(
            out,
            D,
            modules={"vqgan": vq, "disc": disc},
            optimizers={"vqgan": opt, "disc": opt_d},
            generator=gen,
            scaler=scaler,
            run=run_record(),
        )

    stop = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < stop:
        vq.train()
        if xb is None or step % reuse == 0:
            xb = next(batches)["image"].to(dev)
        x = _dihedral(xb, int(torch.randint(8, (1,), generator=gen))) if reuse > 1 else xb
        x = _random_crop(x, cfg.crop, gen)
        use_mask = not cfg.plain and torch.rand((), generator=gen).item() < cfg.mask_prob
        mask = _batch_masks(gen, x.shape[0], x.shape[-1]).to(dev) if use_mask else None
        lr = C.lr_at(step, cfg.lr, cfg.warmup, cfg.steps, progress=C.budget_progress(t0, elapsed, cfg.budget_minutes))
        C.set_lr(opt, lr)
        C.set_lr(opt_d, lr)
        use_disc = cfg.disc_weight > 0 and step >= cfg.disc_start

        with C.autocast(dev, prec):
            if cfg.decoder_only:
                z, idx = _frozen_codes(vq, x, mask)
                xrec, qloss = trained_ddp(z), torch.zeros((), device=dev)
            else:
                xrec, qloss, idx = trained_ddp(x, mask)
        xrec = xrec.float()
        rec = (xrec - x).abs().mean()
        perc = structural_loss(xrec, x)
        loss = rec + cfg.perceptual_weight * perc + qloss.float()
        hue = hue_loss(xrec, x) if cfg.hue_weight > 0 else torch.zeros((), device=dev)
        loss = loss + cfg.hue_weight * hue
        gloss = torch.zeros((), device=dev)
        if use_disc:
            disc.requires_grad_(False)  # the generator's loss must not train D
            with C.autocast(dev, prec):
                gloss = -disc(xrec).float().mean()
            loss = loss + cfg.disc_weight * gloss
        C.clipped_step(opt, scaler, loss, trained.parameters())
        dloss = torch.zeros((), device=dev)
        if use_disc:
            disc.requires_grad_(True)
            with C.autocast(dev, prec):
                # one forward over real and fake: a DDP module wants one forward per backward
                logits = disc_ddp(torch.cat([x, xrec.detach()])).float()
            dloss = hinge_d_loss(*logits.chunk(2))
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(dloss).backward()
            scaler.step(opt_d)
        scaler.update()
        usage += torch.bincount(idx.flatten(), minlength=model_cfg.n_embed)
        step += 1
        if C.budget_spent(D, dev, C.budget_progress(t0, elapsed, cfg.budget_minutes)):
            stop = step  # validate, save and end here

        # the first restarts are a data-dependent codebook init: the uniform(+-1/K) init sits
        # far from the encoder's outputs and most codes would never be picked
        early = cfg.early_restarts and step in (1, 10, 30, 60, 100)
        if cfg.restart_every and (step % cfg.restart_every == 0 or early):
            _restart_dead_codes(vq, usage, x, D, gen)
            usage.zero_()
        bar.update(step, loss=loss.item(), l1=rec.item(), q=qloss.item())
        if step % cfg.log_every == 0 and D.main:
            C.log_line(
                out,
                {
                    "step": step,
                    "lr": lr,
                    "loss": loss.item(),
                    "l1": rec.item(),
                    "structural": perc.item(),
                    "hue": hue.item(),
                    "codebook": qloss.item(),
                    "g": gloss.item(),
                    "d": dloss.item(),
                    "masked": use_mask,
                    "time": time.time() - t0 + elapsed,
                },
            )
        if D.main and cfg.sample_every and (step % cfg.sample_every == 0 or step == stop):
            sample_grid(vq, cfg.data, model_cfg.resolution, out / "samples" / f"step_{step:07d}.png", dev)
        if D.main and cfg.val_every and (step % cfg.val_every == 0 or step == stop):
            m = evaluate_reconstruction(vq, cfg.data, model_cfg.resolution, cfg.val_size, device=dev)
            history.append({"step": step, "seconds": round(time.time() - t0 + elapsed, 1), **m})
            bar.message(
                f"step {step}: validation PSNR {m['psnr']:.2f} dB (naive same-rate code "
                f"{m['thumbnail_psnr']:.2f}), codebook usage {m['codebook_usage']:.0%}"
            )
        if C.end_of_step(
            D, dev, step=step, stop=stop, save_every=cfg.save_every, t0=t0, time_limit=time_limit, save=save, bar=bar
        ):
            break
    bar.close()
    record = run_record()
    record["weights_sha256"] = C.weights_digest(vq)  # per rank: equal on every rank under DDP
    D.close()
    return record


@torch.no_grad()
def _restart_dead_codes(vq: VQModel, usage: torch.Tensor, x: torch.Tensor, D: C.Dist, gen):
    """Codes no rank used since the last restart get a random encoder output (+ noise) of
    rank 0's batch; the new codebook is broadcast so ranks stay identical."""
    usage = D.sum(usage.clone())
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return
    emb = vq.quantize.embedding.weight
    if D.rank == 0:
        was = vq.training
        vq.eval()
        z = vq.encode(x).permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).to(emb.dtype)
        vq.train(was)
        pick = torch.randint(len(z), (len(dead),), generator=gen).to(z.device)
        emb[dead] = z[pick] + 0.01 * z.std() * torch.randn(len(dead), emb.shape[1], generator=gen).to(z.device)
    if D.enabled:
        dist.broadcast(emb.data, 0)
