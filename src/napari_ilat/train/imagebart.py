"""Train ImageBART's reverse stages on tokens of a frozen first stage (DESIGN.md section 4).

For each batch of training images:

    x_0   = plain-encoder tokens of the image      (ImageBART has no two-stream encoder)
    for every stage t = 1..T:
        x_{t-1} ~ q(x_{t-1} | x_0),  x_t ~ q(x_t | x_{t-1})     a fresh draw every step
        loss_t = CE(stage_t(x_t, teacher-forced x_{t-1}), x_{t-1})
    loss  = mean_t loss_t

All T stages train every step on the same images (each has its own weights, so each gets
every step's gradient). No masks are involved: editing uses the guide at sampling time.
Conditional models (``--cond sketch|pose``) get the edit-time condition of a training edit
pair (``Stage2Pairs``: for sketches XDoG of the known pixels outside a random mask and the
target's own XDoG inside it; for poses the target pose), dropped with probability
``cond_dropout`` so the model also edits without one.
The first stage comes from an existing model or run (``--first-stage natural``, a NAME.json,
a stage-1 run directory, a taming checkpoint): a parameter, so a better first stage can be
swapped in without touching this code.

Validation: each stage's cross-entropy on a fixed validation set under a fixed noise draw
(comparable across steps and runs), and an upper-half completion grid (the paper's
showcase: regenerate the top half from the bottom half).

Run-directory conventions are those of ``train transformer`` (common.py): safetensors
checkpoints, ``--resume``, ``--time-limit``, ``--budget``, DDP under torchrun, progress.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from napari_ilat.engine.imagebart import (
    ImageBART,
    ImageBARTConfig,
    ImageBARTModel,
    ImageBARTModelConfig,
    sample_imagebart,
    save_imagebart,
)
from napari_ilat.engine.vqgan import VQGANConfig, VQModel
from napari_ilat.train import common as C
from napari_ilat.train.data import Stage1Images, Stage2Pairs, encode_items
from napari_ilat.train.first_stage import load_first_stage_weights

STAGE = "imagebart"  # the run record's "stage"


@dataclass
class ImageBARTTrainConfig:
    data: str = "natural"  # "natural", "pose" or a folder of images
    cond: str = "none"  # "none", "sketch" or "pose" (needs --data pose)
    cond_dropout: float = 0.2  # conditional models: fraction of unconditional steps
    steps: int = 20000
    batch_size: int = 16
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.01
    # > 0: cycle over the first token_pool images, each encoded once: up front (and saved)
    # with workers = 0, else as the workers first make it (the first pass trains meanwhile)
    token_pool: int = 0
    log_every: int = 10
    val_every: int = 500
    sample_every: int = 500
    save_every: int = 200
    val_size: int = 64
    seed: int = 0
    workers: int = 0
    train_length: int = 1_000_000
    budget_minutes: float = 0.0  # > 0: the schedule spans this much training time, then stop
    # > 0: edit this many validation patches (upper-half completion, natural data) every
    # val_edits_every steps (0: with every validation) and keep the best step's stages in
    # best.safetensors (`train export --best`)
    val_edits: int = 0
    val_edits_every: int = 0


def _dataset(cfg: ImageBARTTrainConfig, split: str, resolution: int, length: int):
    if cfg.cond == "none":
        return Stage1Images(cfg.data, split, resolution, length)
    return Stage2Pairs(cfg.data, split, resolution, length, cfg.cond, causal_frac=0.0)


@torch.no_grad()
def tokenize(vq: VQModel, batch: dict, cond: str, device) -> dict:
    """Batch of items -> {"tokens": (B, N) codes from the plain encoder[, cond: condition]}."""
    _, idx, _ = vq.quantize_latents(vq.encode(batch["image"].to(device), None))
    out = {"tokens": idx.flatten(1)}
    if cond != "none":
        out[cond] = batch[cond].to(device)
    return out


def tokenize_items(vq, ds, indices, cond, device, batch=16, report=None) -> dict:
    """:func:`tokenize` over ``ds[indices]`` (:func:`~napari_ilat.train.data.encode_items`)."""
    return encode_items(lambda b: tokenize(vq, b, cond, device), ds, indices, batch, report)


@torch.no_grad()
def stage_losses(net: ImageBART, data: dict, device, seed: int = 0, batch: int = 32) -> dict[int, float]:
    """Mean cross-entropy of every stage over ``data`` (tokens and, for a conditional model,
    its condition) under one fixed noise draw."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    sums = {t: 0.0 for t in range(1, net.config.n_stages + 1)}
    tokens = data["tokens"]
    key = net.config.cond
    for i in range(0, len(tokens), batch):
        x0 = tokens[i : i + batch].to(device)
        cond = data[key][i : i + batch].to(device) if key in data else None
        for t, loss in net(x0, g, cond).items():
            sums[t] += loss.item() * len(x0)
    return {t: v / len(tokens) for t, v in sums.items()}


@torch.no_grad()
def upper_half_grid(vq, net: ImageBART, images: torch.Tensor, path: Path, device):
    """Rows: target, lower half given, ImageBART's upper half (tokens; decoded as an edit)."""
    net.eval()
    g = torch.Generator(device=device).manual_seed(0)
    grid = vq.config.grid
    known = torch.ones(grid, grid, dtype=torch.bool, device=device)
    known[: grid // 2] = False
    rows = [[], [], []]
    for img in images:
        x = img[None].to(device)
        z = vq.encode(x, None)
        _, idx, _ = vq.quantize_latents(z)
        out = sample_imagebart(net, idx.flatten(), known.flatten(), generator=g)
        rec = vq.decode_tokens(out.view(1, grid, grid), z, (~known)[None])
        half = torch.zeros_like(x)
        half[..., x.shape[-2] // 2 :, :] = x[..., x.shape[-2] // 2 :, :]
        for row, im in zip(rows, (x, half, rec)):
            row.append(C.to_uint8(im)[0])
    C.save_grid([np.stack(r) for r in rows], path)


def _optimizer(net: ImageBART, cfg: ImageBARTTrainConfig):
    # nanoGPT: decay matrices, not biases, norms, embeddings
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        is_matrix = p.ndim >= 2 and not name.endswith(("emb.weight", "pos_emb"))
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def train(
    cfg: ImageBARTTrainConfig,
    arch: dict,
    out,
    *,
    first_stage=None,
    first_stage_config=None,
    resume=False,
    device="auto",
    precision="auto",
    stop_at=None,
    time_limit=None,
    quiet=False,
    init=None,
) -> dict:
    """Train (or resume) ImageBART's stages in ``out``; returns the final run record.
    ``arch``: ImageBARTConfig fields (n_stages, betas, n_enc_layer, ...).

    ``init``: an ImageBART model (NAME.json or bundled name) to start from: its reverse
    stages (architecture and weights; ``arch`` is then ignored) and, unless ``first_stage``
    is given, its first stage. A warm start is a new run (fresh optimiser, warm-up and
    schedule over its own ``--budget``); the run record and the export name what it
    continued (:func:`init_record`), so a chain of runs stays reproducible."""
    out = Path(out)
    if cfg.val_edits < 0 or (cfg.val_edits and cfg.data != "natural"):
        raise ValueError(f"val_edits (upper-half completion) needs --data natural and a count >= 0, got {cfg.data!r}")
    dev = C.pick_device(device)
    prec = C.pick_precision(precision, dev)
    D = C.Dist(dev)
    if resume:
        run, cfg = C.read_resume(out, STAGE, ImageBARTTrainConfig, cfg)
        vq_cfg = VQGANConfig.from_dict(run["first_stage"]["config"])
        vq_sd = C.load_weights(out, "first_stage")
        net_cfg = ImageBARTConfig.from_dict(run["model"])
        first_stage_source = run["first_stage"].get("source")
        init_info = run.get("init")
    else:
        init_sd, init_info = None, None
        if init is not None:
            start_model = _load_imagebart(init)
            first_stage = first_stage or init
            init_sd = start_model.bart.state_dict()
            init_info = init_record(init)
        if first_stage is None:
            raise ValueError("a first stage is required (e.g. --first-stage natural, or a NAME.json)")
        vq_cfg, vq_sd = load_first_stage_weights(first_stage, first_stage_config)
        if init is None:
            net_cfg = ImageBARTConfig(
                vocab_size=vq_cfg.n_embed, grid=vq_cfg.grid, cond=cfg.cond, sketch_patch=vq_cfg.factor, **arch
            )
        else:
            net_cfg = start_model.config.imagebart
            if (net_cfg.vocab_size, net_cfg.grid) != (vq_cfg.n_embed, vq_cfg.grid):
                raise ValueError(f"--init {init}: its stages do not fit the first stage {first_stage}")
            cfg.cond = net_cfg.cond
        first_stage_source = str(first_stage)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to load
    vq = VQModel(vq_cfg)
    vq.load_taming_state_dict(vq_sd, strict=True)
    vq.to(dev).eval().requires_grad_(False)  # frozen

    gen = C.seed_everything(cfg.seed, D.rank)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    net = ImageBART(net_cfg)
    if not resume and init is not None:
        net.load_state_dict(init_sd, strict=True)
    net = net.to(dev)
    C.seed_everything(cfg.seed, D.rank)
    opt = _optimizer(net, cfg)
    scaler = C.grad_scaler(prec)
    start, history, elapsed = 0, [], 0.0
    if resume:
        start, history, elapsed = C.restore(
            out, D, modules={"imagebart": net}, optimizers={"imagebart": opt}, generator=gen, scaler=scaler
        )
    # condition-dropout steps leave the condition map encoders unused: DDP must be told
    net_ddp = (
        DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=net_cfg.cond != "none")
        if D.enabled
        else net
    )

    R = vq_cfg.resolution
    cond_key = net_cfg.cond
    val_ds = _dataset(cfg, "validation", R, max(cfg.val_size, 4))
    val = tokenize_items(vq, val_ds, list(range(cfg.val_size)), cond_key, dev) if D.main else None
    val_images = torch.stack([val_ds[i]["image"] for i in range(4)]) if D.main else None
    train_ds = _dataset(cfg, "train", R, cfg.train_length)
    encode = lambda b: tokenize(vq, b, cond_key, dev)  # noqa: E731
    batches = C.training_batches(train_ds, cfg, D, start, encode, out, quiet, what="images")

    edit_model = edit_cases = None
    best = C.read_best(out) if resume else None
    if cfg.val_edits > 0 and D.main:
        from napari_ilat.evaluation.imagebart import natural_cases

        edit_cases = list(natural_cases("upper_half", cfg.val_edits, R, split="validation"))
        edit_model = ImageBARTModel(ImageBARTModelConfig(vq_cfg, net_cfg))
        edit_model.vqgan, edit_model.bart = vq, net  # the live modules, not copies
    # the validation edits run with the context palette, as the exported model's will
    C.colour_table_at_start(vq, out, run if resume else None, first_stage_source, compute=edit_model is not None)
    bar = C.Progress(cfg.steps, start, enabled=D.main and not quiet, every=cfg.log_every)
    t0 = time.time()
    step = start

    def run_record():
        first_stage = C.first_stage_entry(vq_cfg, first_stage_source, vq)
        elapsed_s = elapsed + time.time() - t0
        rec = C.run_record(
            STAGE, step, net_cfg.to_dict(), cfg, D, dev, prec, history, elapsed_s, first_stage=first_stage
        )
        if init_info is not None:
            rec["init"] = init_info
        if best is not None:
            rec["best"] = best
        return rec

    def save():
        C.save_all(
            out,
            D,
            modules={"imagebart": net, "first_stage": vq},
            optimizers={"imagebart": opt},
            generator=gen,
            scaler=scaler,
            run=run_record(),
        )

    stop = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < stop:
        net.train()
        b = next(batches)
        x0 = b["tokens"].to(dev).long()
        drop = cond_key != "none" and torch.rand((), generator=gen).item() < cfg.cond_dropout
        cond = b[cond_key].to(dev) if cond_key != "none" and not drop else None
        lr = C.lr_at(step, cfg.lr, cfg.warmup, cfg.steps, progress=C.budget_progress(t0, elapsed, cfg.budget_minutes))
        C.set_lr(opt, lr)
        with C.autocast(dev, prec):
            losses = net_ddp(x0, gen, cond)
        loss = torch.stack(list(losses.values())).mean()
        C.clipped_step(opt, scaler, loss, net.parameters())
        scaler.update()
        step += 1
        if C.budget_spent(D, dev, C.budget_progress(t0, elapsed, cfg.budget_minutes)):
            stop = step  # validate, save and end here
        bar.update(step, loss=loss.item())
        if step % cfg.log_every == 0 and D.main:
            rec = {"step": step, "lr": lr, "loss": loss.item(), "time": time.time() - t0 + elapsed}
            rec.update({f"loss_t{t}": v.item() for t, v in losses.items()})
            C.log_line(out, rec)
        rec = {}
        if D.main and cfg.val_every and (step % cfg.val_every == 0 or step == stop):
            per_stage = stage_losses(net, val, dev)
            rec = {"val_loss": float(np.mean(list(per_stage.values())))}
            rec.update({f"val_loss_t{t}": v for t, v in per_stage.items()})
            bar.message(
                f"step {step}: validation cross-entropy per stage "
                + ", ".join(f"t={t} {v:.3f}" for t, v in per_stage.items())
                + f" (mean {rec['val_loss']:.3f}; uniform = {np.log(net_cfg.vocab_size):.3f})"
            )
        if edit_model is not None and (step % (cfg.val_edits_every or cfg.val_every or stop) == 0 or step == stop):
            net.eval()
            rec["edit_psnr"] = C.validation_edit_psnr(edit_model, edit_cases, "imagebart", dev)
            best = C.keep_if_best(out, best, step, rec["edit_psnr"], net)
            bar.message(f"step {step}: upper-half validation edits, in-mask PSNR {rec['edit_psnr']:.2f} dB")
        if rec:
            history.append({"step": step, **rec})
        if D.main and cfg.sample_every and (step % cfg.sample_every == 0 or step == stop):
            upper_half_grid(vq, net, val_images, out / "samples" / f"step_{step:07d}.png", dev)
        if C.end_of_step(
            D, dev, step=step, stop=stop, save_every=cfg.save_every, t0=t0, time_limit=time_limit, save=save, bar=bar
        ):
            break
    bar.close()
    record = run_record()
    record["weights_sha256"] = C.weights_digest(net)
    D.close()
    return record


def _load_imagebart(name):
    from napari_ilat.engine.imagebart import is_imagebart
    from napari_ilat.engine.model import load_model

    model = load_model(name)
    if not is_imagebart(model):
        raise ValueError(f"--init {name}: not an ImageBART model (an iLAT model continues with `train transformer`)")
    return model


def init_record(name) -> dict:
    """What a warm start continued from: the model's name, the sha256 of each of its files
    and how it was trained (its own JSON's training record)."""
    from napari_ilat.engine.model import model_json_path

    path = model_json_path(name)
    meta = json.loads(path.read_text())
    return {
        "model": path.name,
        "sha256": {k: f["sha256"] for k, f in meta["files"].items()},
        "training": meta.get("training"),
    }


# --------------------------------------------------------------------------- export


def is_imagebart_run(run_dir) -> bool:
    run_dir = Path(run_dir)
    return C.has_checkpoint(run_dir) and C.read_run(run_dir).get("stage") == STAGE


def model_from_run(
    run_dir, name: str | None = None, description: str = "", best: bool = False
) -> tuple[ImageBARTModel, dict]:
    """The run's model (last checkpoint; ``best``: the stages of the best validation edits)."""
    run_dir = Path(run_dir)
    if not C.has_checkpoint(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a training run directory")
    run = C.read_run(run_dir)
    if run.get("stage") != STAGE:
        raise ValueError(f"{run_dir} is a {run.get('stage')!r} run, not an ImageBART run")
    cfg = ImageBARTModelConfig(
        VQGANConfig.from_dict(run["first_stage"]["config"]),
        ImageBARTConfig.from_dict(run["model"]),
        name=name or run_dir.name,
        description=description,
    )
    model = ImageBARTModel(cfg)
    model.vqgan.load_state_dict(C.load_weights(run_dir, "first_stage"), strict=True)
    weights, run = C.exported_weights(run_dir, "imagebart", run, best)
    model.bart.load_state_dict(weights, strict=True)
    return model.eval(), run


def export(run_dir, out, *, name=None, description="", dtype="float16", best=False) -> list[Path]:
    """Write the ImageBART model (JSON + first stage + one file per reverse stage; ``best``:
    the stages of the best validation edits); returns the paths written, JSON first."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".safetensors") else out
    model, run = model_from_run(run_dir, name or stem.name, description, best=best)
    stem.parent.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"float16": torch.float16, "float32": None}[dtype]
    C.give_colour_table(model.vqgan, run["first_stage"], run_dir)  # the context palette's, stored in the JSON
    cfg_path = save_imagebart(model, stem, dtype=torch_dtype)
    meta = json.loads(cfg_path.read_text())
    meta["training"] = {  # informational; the checksums cover the weights
        "steps": run["step"],
        "train_minutes": round(run.get("elapsed_s", 0) / 60, 1),
        "device": run.get("device"),
        "world_size": run.get("world_size"),
        "first_stage": run["first_stage"].get("source"),
        "validation": run["history"][-1] if run.get("history") else None,
    }
    if "init" in run:  # a warm start (`--init`): what it continued, and how that was trained
        meta["training"]["started_from"] = run["init"]
    meta["training"].update(C.exported_record(run))  # a best-step export: that step, not the last
    cfg_path.write_text(json.dumps(meta, indent=2) + "\n")
    paths = [cfg_path] + [cfg_path.parent / f["file"] for f in meta["files"].values()]
    for p in paths:  # safetensors writes 0600; files that ship in a wheel must be world-readable
        p.chmod(0o644)
    return paths
