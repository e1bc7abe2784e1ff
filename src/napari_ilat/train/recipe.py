"""``napari-ilat train recipe``: data -> stage 1 -> stage 2 -> export -> eval, in one process,
within a time budget, on whatever device there is (DESIGN.md section 9).

The budget is split between the stages (``stage1_share`` of the training time for the
first stage, the rest for the transformer; ``eval_share`` of the whole is kept for export
and evaluation), and each stage schedules its learning rate over its share of the time, not
over a step count, so the same command suits a 2-core CPU and a GPU. What depends on the
device is sized here, in one place:

* CUDA: bf16 autocast, larger batches, DataLoader workers on the CPU cores generating the
  synthetic data (a pose scene costs ~10-15 ms of one core), every stage-2 batch encoded
  fresh by the frozen first stage on the GPU; with ``token_pool`` the first N items, each
  made once by the workers as first drawn, then served from memory (train/data.py).
* CPU: small batches, the data made in-process, and a token pool for stage 2 (encoding is
  the costly part there, so a pool of pre-encoded items is cycled over).

Everything is written under ``--out``: ``stage1/`` and ``stage2/`` run directories (resumable
with the stage commands), the exported model ``NAME.json`` + ``NAME.stage{1,2}.safetensors``,
``eval.json`` and ``recipe.json`` (the plan, the device, the wall time of every phase).

``init`` (``--init MODEL``) continues a model instead of starting from random weights: both
stages start from its weights and keep its architecture, the first stage without the
codebook's data-dependent early restarts (its codes already carry the transformer's meaning).
With ``stage1_share`` 0 the warm start's first stage is kept as it is and only the
transformer trains (what a CPU continuation can afford).

``imagebart_share`` > 0 also trains ImageBART's reverse stages (the second engine,
docs/imagebart.md) for that fraction of the training time, on the same frozen first stage
after the transformer, so the two engines are trained alike for the comparison: its run
goes to ``imagebart/``, its model to ``NAME-imagebart.json`` + files, and its upper-half and
box comparison against the new iLAT model (and Taming mode on it) to ``recipe.json``.

Ctrl-C or SIGTERM (e.g. ``timeout`` on a lent GPU) inside :func:`~.common.stop_on_signal`
ends training early without losing it: the current stage stops after its step with a
checkpoint, the stages after it are skipped, and what stage 2 has learnt is exported and
evaluated as usual (``recipe.json``: ``stopped``). Stopped in stage 1, there is no
transformer for the new codes yet: nothing is exported, and ``stage1/`` can be resumed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from napari_ilat.engine.vqgan import VQGANConfig
from napari_ilat.train import common as C
from napari_ilat.train.first_stage import load_first_stage_weights, store_colour_table


@dataclass
class RecipeConfig:
    data: str = "pose"  # "pose" or "natural" (or a folder of images: no pose condition)
    minutes: float = 10.0  # the whole budget: training, export and evaluation
    stage1_share: float = 0.5  # of the training time
    eval_share: float = 0.12  # of the whole budget, kept for export + evaluation
    seed: int = 0
    name: str | None = None  # exported model name (default: the data name)
    # warm start: a model (bundled name or NAME.json) whose first stage and transformer both
    # stages continue from; its architecture replaces the size fields below
    init: str | None = None
    # first stage (the bundled size: 128 px, f = 8, 16 x 16 tokens, 512 codes)
    resolution: int = 128
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)
    z_channels: int = 64
    embed_dim: int = 32
    n_embed: int = 512
    stage1_lr: float | None = None  # None: by device
    # transformer
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.1
    cond_map: bool = True  # per-token cells of the pose map / sketch (posemap.py)
    plain: bool = False  # iLAT* ablation: no two-stream convolutions in either stage
    stage2_lr: float | None = None
    # fraction of stage-2 steps without the condition (None: Stage2Config's 0.2). The
    # unconditional branch is what a natural edit without a sketch runs: at 0.2 it got a
    # fifth of the steps (docs/benchmarks.md, "Natural edits without a sketch")
    cond_dropout: float | None = None
    # sketch models: the share of stage-2 items with thin-line sketches (Stage2Config)
    thin_strokes: float = 0.0
    # ImageBART (second engine) on the same first stage, unconditional; 0 = not trained
    imagebart_share: float = 0.0  # of the training time
    ib_n_stages: int = 3
    ib_n_embd: int = 256
    ib_n_head: int = 8
    ib_n_enc_layer: int = 2
    ib_n_dec_layer: int = 4
    # sizing (None: by device)
    batch1: int | None = None
    batch2: int | None = None
    workers: int | None = None
    reuse1: int | None = None  # stage-1 steps per generated batch (flips / transposes)
    token_pool: int | None = None
    # evaluation sizes (None: by device)
    n_eval: int | None = None
    # > 0: stage 2 also edits this many validation cases every VAL_EDITS_EVERY steps (and at
    # its end), and the export takes the transformer of the best of those steps
    val_edits: int = 0


VAL_EDITS_EVERY = 1000  # steps; on an H100 ~70 s of pose training against ~5 s for 64 edits


# Items a CPU core makes and encodes for a token pool per second: 8000 pose items took 2063 s
# (3.9/s) on one thread of the 2-core VM with the other core busy, 6000 natural ones ~20 min
# (5/s); the plan sizes the pool and leaves its time out of stage 2's budget with this rate.
POOL_ITEMS_PER_S = 4.0


def plan(cfg: RecipeConfig, device: torch.device) -> dict:
    """Batch sizes, learning rates, workers, pool and eval sizes for this device."""
    gpu = device.type == "cuda"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p = {
        "batch1": cfg.batch1 or (32 if gpu else 8),
        "batch2": cfg.batch2 or (64 if gpu else 8),
        # the GPU waits for the scene generator unless most cores make data
        "workers": cfg.workers if cfg.workers is not None else (max(1, cores - 2) if gpu else 0),
        # a GPU steps a 128 px VQGAN faster than ~10 cores make pose scenes
        "reuse1": cfg.reuse1 or (3 if gpu else 1),
        # on a CPU encoding an item costs more than a transformer step: pool them; the pool
        # is sized to about a quarter of stage 2's time (POOL_ITEMS_PER_S)
        "token_pool": cfg.token_pool if cfg.token_pool is not None else 0,
        "n_eval": cfg.n_eval if cfg.n_eval is not None else (200 if gpu else 20),
    }
    # 2e-4 for stage 1 on any device: on an H200 at batch 32 it reached 25.4 dB (continuous
    # latent) where 1e-3 reached 22.8 at the same step (docs/training.md); not scaled by batch
    p["stage1_lr"] = cfg.stage1_lr or 2e-4
    p["stage2_lr"] = cfg.stage2_lr or (6e-4 if gpu else 3e-4)
    if not 0 <= cfg.imagebart_share < 1:
        raise ValueError(f"imagebart_share must be in [0, 1), got {cfg.imagebart_share}")
    if not 0 <= cfg.stage1_share < 1:
        raise ValueError(f"stage1_share must be in [0, 1), got {cfg.stage1_share}")
    if cfg.val_edits < 0 or (cfg.val_edits and cfg.data not in ("pose", "natural")):
        raise ValueError(f"--val-edits needs --data pose or natural and a count >= 0, got {cfg.val_edits}")
    if not 0 <= cfg.thin_strokes <= 1 or (cfg.thin_strokes and cfg.data == "pose"):
        raise ValueError(f"--thin-strokes is for sketch models (not --data pose), in [0, 1]; got {cfg.thin_strokes}")
    if cfg.stage1_share == 0 and cfg.init is None:
        # share 0 keeps a warm start's first stage; from scratch there is none to keep
        raise ValueError("stage1_share 0 keeps the first stage of --init: give --init MODEL or a share > 0")
    train_min = cfg.minutes * (1 - cfg.eval_share)
    p["imagebart_minutes"] = train_min * cfg.imagebart_share
    train_min -= p["imagebart_minutes"]
    p["stage1_minutes"] = train_min * cfg.stage1_share
    p["stage2_minutes"] = train_min - p["stage1_minutes"]
    if cfg.token_pool is None and not gpu:
        p["token_pool"] = int(max(16, min(4000, p["stage2_minutes"] * 60 * POOL_ITEMS_PER_S / 4)))
    return p


def pool_setup_seconds(p: dict) -> float:
    """Seconds a plan's token pool takes before training starts: encoding it up front without
    data workers (POOL_ITEMS_PER_S); none with workers, who fill it as they go."""
    if p["token_pool"] <= 0 or p["workers"] > 0:
        return 0.0
    return p["token_pool"] / POOL_ITEMS_PER_S + 5


def first_stage_config(cfg: RecipeConfig) -> VQGANConfig:
    """The recipe's first stage: one res block per level, attention at the latent grid."""
    return VQGANConfig(
        resolution=cfg.resolution,
        ch=cfg.ch,
        ch_mult=cfg.ch_mult,
        num_res_blocks=1,
        attn_resolutions=(cfg.resolution // 2 ** (len(cfg.ch_mult) - 1),),
        z_channels=cfg.z_channels,
        embed_dim=cfg.embed_dim,
        n_embed=cfg.n_embed,
    )


BIG = 10**9  # the time budget ends each phase, not a step count


def _run_options(cfg: RecipeConfig, p: dict, val_every: int) -> dict:
    """The training-run fields every phase shares: data, seed, workers, the time budget in
    charge (no step count, no periodic samples or checkpoints), validation."""
    return dict(
        data=cfg.data,
        steps=BIG,
        warmup=100,
        seed=cfg.seed,
        workers=p["workers"],
        val_every=val_every,
        sample_every=BIG,
        save_every=BIG,
        log_every=50,
        val_size=min(64, p["n_eval"]),
    )


def _phase(result: dict, t0: float) -> dict:
    """A stage's entry in recipe.json: wall seconds since ``t0``, steps, the last validation
    and the whole validation curve."""
    history = result["history"]
    return {
        "seconds": round(time.time() - t0, 1),
        "steps": result["step"],
        "validation": history[-1] if history else None,
        "curve": history,
    }


def _write(path: Path, obj: dict):
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def run(cfg: RecipeConfig, out, *, device="auto", precision="auto", quiet=False) -> dict:
    """Run the whole recipe into ``out``; returns the recipe record (also in recipe.json)."""
    from napari_ilat.train import stage1, stage2
    from napari_ilat.train.evaluate import evaluate
    from napari_ilat.train.export import export

    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = C.pick_device(device)
    prec = C.pick_precision(precision, dev)
    p = plan(cfg, dev)
    cond = "pose" if cfg.data == "pose" else "sketch"
    name = cfg.name or (cfg.data if cfg.data in ("pose", "natural") else "custom") + ("-plain" if cfg.plain else "")
    record = {
        "config": asdict(cfg),
        "plan": p,
        "device": str(dev),
        "precision": prec,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "phases": {},
    }
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    def log(msg):
        if not quiet:
            print(f"[recipe {time.time() - t_start:6.0f} s] {msg}", flush=True)

    log(f"device {record['device_name']} ({prec}); plan {p}")
    # training must end by this time; stage 2 gets whatever stage 1 (and its validation) left
    deadline = t_start + 60 * (p["stage1_minutes"] + p["stage2_minutes"])
    # a GPU validates every 200 steps (a few seconds each), so recipe.json keeps PSNR and
    # perplexity against wall-clock; a CPU run is too short for more than the final one
    val_every = 200 if dev.type == "cuda" else BIG
    run_opts = _run_options(cfg, p, val_every)
    c1 = stage1.Stage1Config(
        **run_opts,
        batch_size=p["batch1"],
        lr=p["stage1_lr"],
        budget_minutes=p["stage1_minutes"],
        disc_weight=0.0,
        reuse=p["reuse1"],
        plain=cfg.plain,
    )
    m1, init1 = first_stage_config(cfg), None
    if cfg.init is not None:
        m1, init1 = load_first_stage_weights(cfg.init)
        record["init"] = _init_record(cfg.init)
        log(f"warm start from {record['init']}")
    t = time.time()
    if p["stage1_minutes"] > 0:
        r1 = stage1.train(c1, m1, out / "stage1", device=dev, precision=prec, init_weights=init1, quiet=quiet)
        record["phases"]["stage1"] = _phase(r1, t)
        first_stage = out / "stage1"
        log(f"stage 1: {r1['step']} steps, {record['phases']['stage1']}")
    else:  # stage 2 alone, on the warm start's first stage, unchanged (plan() checked --init)
        record["phases"]["stage1"] = {"seconds": 0.0, "steps": 0, "kept": str(cfg.init)}
        first_stage = cfg.init
        log(f"stage 1: kept from {cfg.init}")
    _write(out / "recipe.json", record)
    if p["stage1_minutes"] > 0 and C.stop_requested():  # no transformer for new codes yet
        record["stopped"] = "stage 1"
        _write(out / "recipe.json", record)
        log(f"stopped on request in stage 1: nothing exported; resume {out / 'stage1'} with `train vqgan --resume`")
        return record

    if p["stage1_minutes"] > 0:
        # the first stage's colour table (the context palette's), decoded once here, inside
        # the budget: stage 2, ImageBART and both exports take it from the stage-1 run (a
        # minute of a CPU at the bundled size, which the export used to add to --minutes)
        t = time.time()
        store_colour_table(first_stage, dev)
        record["phases"]["colour_table"] = {"seconds": round(time.time() - t, 1)}
        log(f"colour table: {record['phases']['colour_table']['seconds']} s")
    # the token pool is encoded before stage 2's clock starts
    setup = pool_setup_seconds(p)
    p["stage2_minutes"] = max(0.05, (deadline - time.time() - setup) / 60)
    c2 = stage2.Stage2Config(
        **run_opts,
        cond=cond,
        batch_size=p["batch2"],
        lr=p["stage2_lr"],
        token_pool=p["token_pool"],
        budget_minutes=p["stage2_minutes"],
        plain=cfg.plain,
        val_edits=cfg.val_edits,
        val_edits_every=VAL_EDITS_EVERY,
        thin_strokes=cfg.thin_strokes,
        **({} if cfg.cond_dropout is None else {"cond_dropout": cfg.cond_dropout}),
    )
    arch = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, cond_map=cfg.cond_map)
    t = time.time()
    r2 = stage2.train(
        c2, arch, out / "stage2", first_stage=first_stage, init=cfg.init, device=dev, precision=prec, quiet=quiet
    )
    record["phases"]["stage2"] = _phase(r2, t)
    log(f"stage 2: {r2['step']} steps, {record['phases']['stage2']}")
    if C.stop_requested():
        record["stopped"] = "stage 2"
        log("stopped on request in stage 2: exporting and evaluating what it learnt (Ctrl-C again aborts)")
    _write(out / "recipe.json", record)

    desc = f"napari-ilat train recipe --data {cfg.data} --minutes {cfg.minutes:g}"
    if cfg.init is not None:
        desc += f" --init {record['init']['model']} (stage-1 sha256 {record['init']['stage1_sha256'][:12]})"
    desc += f" on {record['device_name']} ({prec})"
    if p["imagebart_minutes"] > 0 and "stopped" not in record:
        record["phases"]["imagebart"] = _imagebart(cfg, p, out, name, desc, dev, prec, run_opts, quiet, first_stage)
        log(f"imagebart: {record['phases']['imagebart']['steps']} steps")
        _write(out / "recipe.json", record)
    t = time.time()
    best = cfg.val_edits > 0 and C.read_best(out / "stage2") is not None
    if cfg.val_edits > 0 and not best:  # stopped before its first validation edits
        record["exported"] = "last step (stopped before any validation edits)"
        log("no validation edits were scored before the stop: exporting the last step's transformer")
    paths = export(out / "stage2", out / name, name=name, description=desc, best=best)
    record["model"] = str(paths[0])
    meta = json.loads(paths[0].read_text())
    meta["training"]["recipe"] = {
        "command": desc,
        "device": record["device_name"],
        "minutes": cfg.minutes,
        "phases": record["phases"],
    }
    if "stopped" in record:
        meta["training"]["recipe"]["stopped"] = record["stopped"]
    if cfg.init is not None:
        meta["training"]["recipe"]["init"] = record["init"]
    paths[0].write_text(json.dumps(meta, indent=2) + "\n")
    # the JSON's checksums cover the weights only, so the provenance may be added afterwards
    _write(out / "recipe.json", record)  # the model is there, whatever becomes of the evaluation
    n = p["n_eval"]
    # a folder of the user's images is measured on its own held-out tenth (by file name), not
    # on our test photographs
    from napari_ilat.train.data import SOURCES, ImageFolder

    folder = cfg.data not in SOURCES
    res = evaluate(
        str(paths[0]),
        data=cfg.data,
        split="validation" if folder else "test",
        n_recon=n,
        n_ppl=n,
        n_pose=n if cond == "pose" else 0,
        n_speed=0,
        plain=cfg.plain,
        device=str(dev),
        seed=cfg.seed,
    )
    if folder:
        res["held_out"] = ImageFolder(cfg.data, "validation").held_out
        if not res["held_out"]:
            log(
                "the evaluation ran on a training image: no file name of the folder fell into the held-out "
                "tenth (chosen by a hash of the name), so these numbers say little; add images"
            )
    record["phases"]["export_eval"] = {"seconds": round(time.time() - t, 1)}
    record["eval"] = res
    record["wall_seconds"] = round(time.time() - t_start, 1)
    _write(out / "eval.json", res)
    if "imagebart" in record["phases"] and cfg.data == "natural":  # the comparison's test photos
        record["eval_imagebart"] = _compare_imagebart(out, name, paths[0], min(n, 100))
    _write(out / "recipe.json", record)
    log(f"done in {record['wall_seconds']:.0f} s; eval {json.dumps(res)}")
    return record


def _init_record(init: str) -> dict:
    """What a warm start continued from: the model's name, its weights' checksums and how it
    was trained (its own recipe record), so the chain of runs stays reproducible."""
    from napari_ilat.engine.model import model_json_path

    meta = json.loads(model_json_path(init).read_text())
    files = meta.get("files") or {"stage1": meta, "stage2": meta}  # format 2: one file per stage
    rec = {
        "model": str(init),
        "stage1_sha256": files["stage1"]["sha256"],
        "stage2_sha256": files["stage2"]["sha256"],
    }
    training = meta.get("training", {})
    if "recipe" in training:
        rec["recipe"] = {k: training["recipe"].get(k) for k in ("command", "device", "minutes")}
    return rec


def _imagebart(
    cfg: RecipeConfig, p: dict, out: Path, name: str, desc: str, dev, prec, run_opts, quiet, first_stage
) -> dict:
    """Train and export ImageBART on the recipe's first stage; its recipe.json phase."""
    from napari_ilat.train import imagebart

    pool = p["token_pool"]
    t = time.time()
    cib = imagebart.ImageBARTTrainConfig(
        **run_opts,
        batch_size=p["batch2"],
        lr=p["stage2_lr"],
        token_pool=pool,
        # a pool encoded up front is inside the budget's clock on the first step: leave its
        # time out
        budget_minutes=max(0.05, p["imagebart_minutes"] - pool_setup_seconds(p) / 60),
    )
    arch = dict(
        n_stages=cfg.ib_n_stages,
        n_embd=cfg.ib_n_embd,
        n_head=cfg.ib_n_head,
        n_enc_layer=cfg.ib_n_enc_layer,
        n_dec_layer=cfg.ib_n_dec_layer,
        dropout=cfg.dropout,
    )
    r = imagebart.train(cib, arch, out / "imagebart", first_stage=first_stage, device=dev, precision=prec, quiet=quiet)
    imagebart.export(out / "imagebart", out / f"{name}-imagebart", name=f"{name}-imagebart", description=desc)
    return _phase(r, t)


def _compare_imagebart(out: Path, name: str, ilat_json: Path, n: int) -> dict:
    """Upper-half completion and box masks: ImageBART against the recipe's iLAT model (and
    Taming mode on it), in-mask means; the full tables come from ``bench imagebart``."""
    from napari_ilat.evaluation.imagebart import compare

    res = compare(str(out / f"{name}-imagebart.json"), str(ilat_json), tasks=("upper_half", "box"), n=n)
    return {task: r["mean"] for task, r in res.items()}
