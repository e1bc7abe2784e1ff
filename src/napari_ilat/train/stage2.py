"""Stage 2: train the LA transformer on tokens of a frozen first stage (DESIGN.md section 3).

For each training item (an edit *target* image, its edit mask, its condition):

    z_hat  = vqgan.encode(target, mask)        two-stream: known tokens never saw masked pixels
    tokens = quantize(z_hat) indices           (B, N)
    known  = ~token_mask(mask)                 M_q = maxpool_f(mask)
    loss   = masked_token_loss(transformer(tokens, known, cond))   CE on masked tokens only

~``causal_frac`` of the sequences have no known tokens (plain raster AR, the Taming
baseline uses the same network) and are encoded with the plain encoder, as that mode does at
edit time. With probability ``cond_dropout`` a step runs without condition (cond=None), so a
conditional model also edits without one.

Validation: perplexity exp(mean CE) over the masked tokens of a fixed validation set
(conditional, and unconditional for conditional models). With ``val_edits`` also what the
product does: whole edits (``edit()``, default sampling and compositing) of fixed
validation cases, scored by in-mask PSNR, with the best step's weights kept beside the
checkpoint (a lower perplexity has not always meant better edits: docs/benchmarks.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from napari_ilat.engine.transformer import LATransformer, TransformerConfig, masked_token_loss
from napari_ilat.engine.vqgan import VQGANConfig, VQModel
from napari_ilat.train import common as C
from napari_ilat.train.data import Stage2Pairs, encode_items
from napari_ilat.train.first_stage import load_first_stage_weights


@dataclass
class Stage2Config:
    data: str = "pose"  # "pose", "natural" or a folder of images
    cond: str | None = None  # None: "pose" for pose data, "sketch" otherwise
    steps: int = 20000
    batch_size: int = 16
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.01
    cond_dropout: float = 0.2
    causal_frac: float = 0.15
    # sketch models: the share of training items whose sketch inside the mask is thin lines
    # (engine.sketch.thin_strokes) rather than the dense XDoG map, as a user draws
    thin_strokes: float = 0.0
    # > 0: cycle over the first token_pool items, each encoded once: up front (and saved) with
    # workers = 0, else as the workers first make it (the first pass trains meanwhile)
    token_pool: int = 0
    plain: bool = False  # encode with the plain encoder (iLAT* ablation)
    log_every: int = 10
    val_every: int = 500
    sample_every: int = 500
    save_every: int = 200
    val_size: int = 64
    seed: int = 0
    workers: int = 0
    train_length: int = 1_000_000
    budget_minutes: float = 0.0  # > 0: the schedule spans this much training time, then stop
    # > 0: at every validation also edit this many validation cases with edit() (pose data:
    # pose pairs with their target pose; natural: box holes) and keep the weights of the
    # step with the best mean in-mask PSNR in best.safetensors (`train export --best`);
    # sketch models also get the sketch's gain (brush strokes with the true sketch vs none)
    val_edits: int = 0
    val_edits_every: int = 0  # steps between those edits (0: with every validation)

    def resolved_cond(self) -> str:
        return self.cond or ("pose" if self.data == "pose" else "sketch")


def validation_edit_cases(data: str, n: int, resolution: int) -> list:
    """The fixed validation cases ``val_edits`` scores: pose pairs edited with their target
    pose for pose data, one square hole (48-64 px at 128) per patch for natural data."""
    from napari_ilat.evaluation.quality import box_cases, pose_cases

    if data == "pose":
        return list(pose_cases(n, resolution, split="validation"))
    if data == "natural":
        return list(box_cases(n, resolution, split="validation"))
    raise ValueError(f"val_edits needs --data pose or natural, got {data!r}")


def _cond_key(cond: str):
    return {"pose": "pose", "sketch": "sketch"}.get(cond)


@torch.no_grad()
def tokenize(vq: VQModel, batch: dict, plain: bool, device) -> dict:
    """Batch of items -> tokens (B, N) long, known (B, N) bool (+ the condition tensors)."""
    x = batch["image"].to(device)
    m = batch["mask"].to(device).bool()
    causal = batch["causal"].to(device).bool()
    # causal (Taming-style) rows are encoded as that mode does at edit time: plain encoder.
    # An all-False mask makes the two-stream encoder compute exactly that.
    enc_mask = None if plain else m & ~causal[:, None, None, None]
    z = vq.encode(x, enc_mask)
    _, idx, _ = vq.quantize_latents(z)
    known = ~vq.token_mask(m).flatten(1)
    known[causal] = False
    out = {"tokens": idx.flatten(1), "known": known}
    for k in ("pose", "sketch"):
        if k in batch:
            out[k] = batch[k].to(device)
    return out


def tokenize_items(vq, ds, indices, plain, device, batch=16, report=None) -> dict:
    """:func:`tokenize` over ``ds[indices]`` (:func:`~napari_ilat.train.data.encode_items`)."""
    return encode_items(lambda b: tokenize(vq, b, plain, device), ds, indices, batch, report)


@torch.no_grad()
def perplexity(tf: LATransformer, data: dict, cond_key, device, batch=32) -> float:
    """exp(mean cross-entropy over every masked token of ``data``)."""
    tf.eval()
    total, count = 0.0, 0
    n = len(data["tokens"])
    for i in range(0, n, batch):
        tok = data["tokens"][i : i + batch].to(device)
        known = data["known"][i : i + batch].to(device)
        cond = data[cond_key][i : i + batch].to(device) if cond_key else None
        logits, order, n_known = tf(tok, known, cond)
        target = tok.gather(1, order)
        stream = torch.arange(tok.shape[1], device=device)[None] >= n_known[:, None]
        total += F.cross_entropy(logits[stream].float(), target[stream], reduction="sum").item()
        count += int(stream.sum())
    return math.exp(total / max(1, count))


def _build_transformer(vq_cfg: VQGANConfig, cond: str, arch: dict) -> TransformerConfig:
    return TransformerConfig(vocab_size=vq_cfg.n_embed, grid=vq_cfg.grid, cond=cond, sketch_patch=vq_cfg.factor, **arch)


def _optimizer(tf: LATransformer, cfg: Stage2Config):
    # nanoGPT: decay matrices (Linear / conv weights), not biases, norms, embeddings
    decay, no_decay = [], []
    for name, p in tf.named_parameters():
        is_matrix = p.ndim >= 2 and not name.endswith(("tok_emb.weight", "pos_emb", "query_emb", "joint", ".pos"))
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def sample_grid(vq, tf, val_items: list[dict], cond: str, path: Path, device):
    """Rows: target, masked input, one sample (temperature 1) decoded as an edit would be."""
    from napari_ilat.engine.sampler import sample_tokens

    tf.eval()
    rows = [[], [], []]
    g = torch.Generator(device=device).manual_seed(0)
    for item in val_items:
        x = item["image"][None].to(device)
        m = item["mask"][None].to(device).bool()
        z = vq.encode(x, m)
        _, idx, _ = vq.quantize_latents(z)
        mq = vq.token_mask(m)
        known = ~mq.flatten()
        c = item[cond][None].to(device) if cond in ("pose", "sketch") else None
        out = sample_tokens(tf, idx.flatten(), known, c, generator=g)
        rec = vq.decode_tokens(out.view(1, *mq.shape[1:]), z, mq)
        rows[0].append(C.to_uint8(x)[0])
        rows[1].append(C.to_uint8(torch.where(m, 0.0, x))[0])
        rows[2].append(C.to_uint8(rec)[0])
    C.save_grid([np.stack(r) for r in rows], path)


def train(
    cfg: Stage2Config,
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
    """Train (or resume) a transformer in ``out``; returns the final run record.

    ``init``: a napari-ilat model (NAME.json or bundled name) to start from: its transformer
    (architecture and weights; ``arch`` is then ignored) and, unless ``first_stage`` is
    given, its first stage, e.g. to continue on a CPU a model trained on a GPU."""
    out = Path(out)
    if cfg.val_edits < 0 or (cfg.val_edits and cfg.data not in ("pose", "natural")):
        raise ValueError(f"val_edits needs --data pose or natural and a count >= 0, got {cfg.val_edits}, {cfg.data!r}")
    dev = C.pick_device(device)
    prec = C.pick_precision(precision, dev)
    D = C.Dist(dev)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        run, cfg = C.read_resume(out, "transformer", Stage2Config, cfg)
        vq_cfg = VQGANConfig.from_dict(run["first_stage"]["config"])
        vq_sd = C.load_weights(out, "first_stage")
        tf_cfg = TransformerConfig.from_dict(run["model"])
        first_stage_source = run["first_stage"].get("source")
    else:
        init_sd = None
        if init is not None:
            from napari_ilat.engine.model import load_model

            start_model = load_model(init)
            first_stage = first_stage or init
            init_sd = start_model.transformer.state_dict()
            tf_cfg = start_model.config.transformer
        vq_cfg, vq_sd = load_first_stage_weights(first_stage, first_stage_config)
        if init is None:
            tf_cfg = _build_transformer(vq_cfg, cfg.resolved_cond(), arch)
        elif (tf_cfg.vocab_size, tf_cfg.grid) != (vq_cfg.n_embed, vq_cfg.grid):
            raise ValueError(f"--init {init}: its transformer does not fit the first stage {first_stage}")
        first_stage_source = str(first_stage)
    cfg.cond = tf_cfg.cond
    vq = VQModel(vq_cfg)
    vq.load_taming_state_dict(vq_sd, strict=True)
    vq.to(dev).eval().requires_grad_(False)  # frozen

    gen = C.seed_everything(cfg.seed, D.rank)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    tf = LATransformer(tf_cfg)
    if not resume and init is not None:
        tf.load_state_dict(init_sd, strict=True)
    tf = tf.to(dev)
    C.seed_everything(cfg.seed, D.rank)
    opt = _optimizer(tf, cfg)
    scaler = C.grad_scaler(prec)
    start, history, elapsed = 0, [], 0.0
    if resume:
        start, history, elapsed = C.restore(
            out, D, modules={"transformer": tf}, optimizers={"transformer": opt}, generator=gen, scaler=scaler
        )
    # condition-dropout steps leave the condition encoder unused: DDP must be told
    tf_ddp = (
        DDP(tf, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=tf_cfg.cond != "none")
        if D.enabled
        else tf
    )
    cond_key = _cond_key(tf_cfg.cond)

    R = vq_cfg.resolution
    val_ds = Stage2Pairs(cfg.data, "validation", R, max(cfg.val_size, 4), tf_cfg.cond, causal_frac=0.0)
    val = tokenize_items(vq, val_ds, list(range(cfg.val_size)), cfg.plain, dev) if D.main else None
    val_items = [val_ds[i] for i in range(4)] if D.main else None
    train_ds = Stage2Pairs(
        cfg.data, "train", R, cfg.train_length, tf_cfg.cond, causal_frac=cfg.causal_frac, thin_frac=cfg.thin_strokes
    )
    batches = C.training_batches(train_ds, cfg, D, start, lambda b: tokenize(vq, b, cfg.plain, dev), out, quiet)

    edit_model = edit_cases = sketch_cases = None
    best = C.read_best(out) if resume else None
    if cfg.val_edits > 0 and D.main:
        from napari_ilat.engine.model import ILATModel, ModelConfig
        from napari_ilat.evaluation.quality import natural_cases

        edit_cases = validation_edit_cases(cfg.data, cfg.val_edits, R)
        if tf_cfg.cond == "sketch":  # also the sketch's gain: brush strokes with the true sketch or none
            sketch_cases = list(natural_cases(cfg.val_edits, R, True, split="validation"))
        edit_model = ILATModel(ModelConfig(vqgan=vq_cfg, transformer=tf_cfg))
        edit_model.vqgan, edit_model.transformer = vq, tf  # the live modules, not copies
    # the validation edits run with the context palette, as the exported model's will
    C.colour_table_at_start(vq, out, run if resume else None, first_stage_source, compute=edit_model is not None)
    bar = C.Progress(cfg.steps, start, enabled=D.main and not quiet, every=cfg.log_every)
    t0 = time.time()
    step = start

    def run_record():
        first_stage = C.first_stage_entry(vq_cfg, first_stage_source, vq)
        elapsed_s = elapsed + time.time() - t0
        extra = {"best": best} if best is not None else {}
        return C.run_record(
            "transformer",
            step,
            tf_cfg.to_dict(),
            cfg,
            D,
            dev,
            prec,
            history,
            elapsed_s,
            first_stage=first_stage,
            **extra,
        )

    def save():
        C.save_all(
            out,
            D,
            modules={"transformer": tf, "first_stage": vq},
            optimizers={"transformer": opt},
            generator=gen,
            scaler=scaler,
            run=run_record(),
        )

    stop = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < stop:
        tf.train()
        b = next(batches)
        tokens, known = b["tokens"].to(dev).long(), b["known"].to(dev).bool()
        drop = torch.rand((), generator=gen).item() < cfg.cond_dropout
        cond = b[cond_key].to(dev) if cond_key and not drop else None
        lr = C.lr_at(step, cfg.lr, cfg.warmup, cfg.steps, progress=C.budget_progress(t0, elapsed, cfg.budget_minutes))
        C.set_lr(opt, lr)
        with C.autocast(dev, prec):
            logits, order, n_known = tf_ddp(tokens, known, cond)
        loss = masked_token_loss(logits.float(), tokens, order, n_known)
        C.clipped_step(opt, scaler, loss, tf.parameters())
        scaler.update()
        step += 1
        if C.budget_spent(D, dev, C.budget_progress(t0, elapsed, cfg.budget_minutes)):
            stop = step  # validate, save and end here
        bar.update(step, loss=loss.item())
        if step % cfg.log_every == 0 and D.main:
            C.log_line(
                out,
                {
                    "step": step,
                    "lr": lr,
                    "loss": loss.item(),
                    "cond": cond is not None,
                    "time": time.time() - t0 + elapsed,
                },
            )
        rec, seconds = {}, round(time.time() - t0 + elapsed, 1)
        if D.main and cfg.val_every and (step % cfg.val_every == 0 or step == stop):
            rec["perplexity"] = perplexity(tf, val, cond_key, dev)
            if cond_key:
                rec["perplexity_uncond"] = perplexity(tf, val, None, dev)
        edit_every = cfg.val_edits_every or cfg.val_every or stop  # all 0: at the end only
        if edit_model is not None and (step % edit_every == 0 or step == stop):
            tf.eval()
            mode = "ilat*" if cfg.plain else "ilat"
            rec["edit_psnr"] = C.validation_edit_psnr(edit_model, edit_cases, mode, dev)
            if sketch_cases is not None:  # the guided-vs-unguided gap issue 13 asks to follow
                unguided = [(*c[:4], {}) for c in sketch_cases]
                rec["edit_sketch_gain"] = C.validation_edit_psnr(
                    edit_model, sketch_cases, mode, dev
                ) - C.validation_edit_psnr(edit_model, unguided, mode, dev)
            best = C.keep_if_best(out, best, step, rec["edit_psnr"], tf)
        if rec:
            rec = {"step": step, "seconds": seconds, **rec}
            history.append(rec)
            bar.message(f"step {step}: validation " + ", ".join(f"{k} {v:.2f}" for k, v in rec.items() if k != "step"))
        if D.main and cfg.sample_every and (step % cfg.sample_every == 0 or step == stop):
            sample_grid(vq, tf, val_items, tf_cfg.cond, out / "samples" / f"step_{step:07d}.png", dev)
        if C.end_of_step(
            D, dev, step=step, stop=stop, save_every=cfg.save_every, t0=t0, time_limit=time_limit, save=save, bar=bar
        ):
            break
    bar.close()
    record = run_record()
    record["weights_sha256"] = C.weights_digest(tf)  # per rank: equal on every rank under DDP
    D.close()
    return record
