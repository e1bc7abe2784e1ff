"""``napari-ilat train``: train the two stages, evaluate, and export a model.

    napari-ilat train vqgan        --data pose --out runs/pose-vq ...
    napari-ilat train transformer  --data pose --first-stage runs/pose-vq --out runs/pose-tf ...
    napari-ilat train export       --first-stage runs/pose-vq --transformer runs/pose-tf --out NAME
    napari-ilat train eval         --model NAME --data pose
    napari-ilat train recipe       --data pose --minutes 10 --out runs/pose-recipe
    napari-ilat train imagebart    --data natural --first-stage natural --out runs/nat-ib
    napari-ilat train export       --transformer runs/nat-ib --out NAME   (an ImageBART run too)
    napari-ilat train vqgan        --init pose --decoder-only --out runs/pose-dec ...
    napari-ilat train export       --transformer pose --first-stage runs/pose-dec --out NAME

Multi-GPU / multi-node: launch the same command with torchrun, e.g.
``torchrun --nproc_per_node 8 -m napari_ilat.cli train vqgan ...`` (DistributedDataParallel;
--batch-size is per process).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)


def _common(p: argparse.ArgumentParser):
    p.add_argument("--out", required=True, help="run directory (checkpoints, samples, log)")
    p.add_argument("--data", default=None, help="'pose', 'natural', or a folder of your own images (PNG/JPEG/TIFF)")
    p.add_argument("--steps", type=int, default=None, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=None, help="images per process and step")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument("--val-size", type=int, default=None, help="validation images")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto = bf16 (or fp16 + loss scaling) autocast on CUDA, fp32 elsewhere",
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="save and exit at this step (the schedule still runs to --steps); resume later",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="save and exit after this many minutes (for time-limited jobs); resume later",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        dest="budget_minutes",
        help="minutes of training: the learning rate decays over this time (not over --steps) "
        "and the run ends when it is spent",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (on a busy machine 1 is often fastest)"
    )


def add_arguments(parser: argparse.ArgumentParser):
    sub = parser.add_subparsers(dest="train_command", metavar="STAGE", required=True)

    p = sub.add_parser("vqgan", help="stage 1: the two-stream VQGAN")
    _common(p)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--ch", type=int, default=64)
    p.add_argument("--ch-mult", type=_ints, default=(1, 1, 2, 2), help="e.g. 1,1,2,2 (f = 2**(n-1))")
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--attn-resolutions", type=_ints, default=(16,))
    p.add_argument("--z-channels", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--n-embed", type=int, default=512, help="codebook size")
    p.add_argument("--crop", type=int, default=None, help="train on random crops of this size")
    p.add_argument("--mask-prob", type=float, default=None, help="fraction of two-stream (masked) steps")
    p.add_argument("--plain", action="store_true", help="never train with two-stream masks (iLAT* ablation)")
    p.add_argument(
        "--reuse",
        type=int,
        default=None,
        help="optimisation steps per generated batch, each on a flip / transpose of it (a GPU that "
        "steps faster than the data workers make images)",
    )
    p.add_argument("--perceptual-weight", type=float, default=None)
    p.add_argument("--disc-start", type=int, default=None, help="step at which the PatchGAN loss starts")
    p.add_argument("--disc-weight", type=float, default=None)
    p.add_argument(
        "--hue-weight",
        type=float,
        default=None,
        help="weight of a loss on the chroma direction of coloured pixels (the hue; default 0: off)",
    )
    p.add_argument(
        "--restart-every",
        type=int,
        default=None,
        help="re-initialise codebook entries unused for this many steps (0 = never)",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start from these first-stage weights (a model name or NAME.json, taming .ckpt, "
        ".safetensors or a run directory)",
    )
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="with --init: train the decoder alone, the encoder and codebook frozen, so every image keeps "
        "its codes and a model's transformer stays valid (then `train export --first-stage`)",
    )

    p = sub.add_parser("transformer", help="stage 2: the LA transformer on a frozen first stage")
    _common(p)
    p.add_argument(
        "--first-stage",
        required=False,
        default=None,
        help="stage-1 run directory, a taming-transformers VQGAN .ckpt, or a .safetensors "
        "(+ --first-stage-config JSON when it is not a run directory)",
    )
    p.add_argument(
        "--first-stage-config",
        default=None,
        help="JSON VQGANConfig for a .ckpt/.safetensors first stage (default: taming f16)",
    )
    p.add_argument("--cond", default=None, choices=["none", "pose", "sketch"])
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument(
        "--pose-freqs",
        type=int,
        default=0,
        help="Fourier-feature octaves on pose keypoint coordinates (0 = raw x, y, v as in "
        "the reference model; 6 reaches the token pitch of a 16x16 grid)",
    )
    p.add_argument("--cond-dropout", type=float, default=None, help="fraction of unconditional steps")
    p.add_argument("--causal-frac", type=float, default=None, help="fraction of plain raster sequences")
    p.add_argument(
        "--thin-strokes",
        type=float,
        default=None,
        help="sketch models: fraction of training sketches drawn as thin lines inside the mask, as a "
        "user draws, rather than the dense XDoG map (default 0)",
    )
    p.add_argument(
        "--token-pool",
        type=int,
        default=None,
        help="cycle over the first N training samples, each made and encoded once: up front "
        "without --workers, else by the workers as first drawn while the first pass trains "
        "(0 = fresh samples every batch; a pool saves first-stage time on CPUs and data-making "
        "time where the workers cannot keep up with a GPU)",
    )
    p.add_argument("--plain", action="store_true", help="encode with the plain encoder (iLAT* ablation)")
    p.add_argument(
        "--val-edits",
        type=int,
        default=None,
        help="at every validation also edit this many validation cases (pose pairs / natural box holes) "
        "and keep the best step's weights for `train export --best` (0 = off)",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start from this napari-ilat model's transformer (and first stage, unless "
        "--first-stage is given), e.g. to continue a GPU-trained model on a CPU",
    )

    p = sub.add_parser(
        "imagebart",
        help="ImageBART: T encoder-decoder reverse stages on a frozen first stage (mode imagebart)",
    )
    _common(p)
    p.add_argument(
        "--first-stage",
        default=None,
        help="where the (frozen) first stage comes from: a model (bundled name such as 'natural', or "
        "NAME.json), a stage-1 run directory, a taming .ckpt or a .safetensors; required unless --resume",
    )
    p.add_argument("--first-stage-config", default=None, help="JSON VQGANConfig for a .ckpt/.safetensors first stage")
    p.add_argument(
        "--cond",
        default=None,
        choices=["none", "sketch", "pose"],
        help="condition (default none; pose needs --data pose)",
    )
    p.add_argument("--cond-dropout", type=float, default=None, help="fraction of unconditional steps (conditional)")
    p.add_argument("--n-stages", type=int, default=3, help="T reverse stages")
    p.add_argument(
        "--betas",
        type=lambda t: tuple(float(v) for v in t.split(",")),
        default=None,
        help="the schedule beta_1..beta_T, comma-separated, the last 1 (default: geometric 1/(T-t+1))",
    )
    p.add_argument("--n-enc-layer", type=int, default=2, help="encoder blocks per stage")
    p.add_argument("--n-dec-layer", type=int, default=4, help="decoder blocks per stage")
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument(
        "--token-pool",
        type=int,
        default=None,
        help="cycle over the first N training images, each made and encoded once: up front without "
        "--workers, else by the workers as first drawn (0 = fresh images every batch)",
    )
    p.add_argument(
        "--val-edits",
        type=int,
        default=None,
        help="also complete the upper half of this many validation patches (natural data) at every "
        "validation and keep the best step's stages for `train export --best` (0 = off)",
    )
    p.add_argument("--val-edits-every", type=int, default=None, help="steps between those edits (0: every validation)")
    p.add_argument(
        "--init",
        default=None,
        help="warm start: continue this ImageBART model's stages (bundled name such as "
        "'natural-imagebart', or NAME.json) and its first stage, unless --first-stage is given; "
        "its architecture is kept",
    )
    p.add_argument("--export", default=None, help="also export the model to this path (NAME -> NAME.json + ...)")

    p = sub.add_parser(
        "recipe",
        help="data -> stage 1 -> stage 2 -> export -> eval in one time budget, "
        "sized to the device (CUDA bf16 on a GPU)",
    )
    p.add_argument("--data", default="pose", help="'pose', 'natural', or a folder of your own images")
    p.add_argument("--minutes", type=float, required=True, help="the whole budget, evaluation included")
    p.add_argument("--out", required=True, help="directory for both runs, the model and eval.json")
    p.add_argument("--name", default=None, help="exported model name (default: the data name)")
    p.add_argument(
        "--init",
        default=None,
        help="warm start: continue both stages from this model (bundled name or NAME.json); its architecture is kept",
    )
    p.add_argument(
        "--stage1-share",
        type=float,
        default=None,
        help="fraction of the training time for stage 1 (0 with --init: keep its first stage, train stage 2 only)",
    )
    p.add_argument("--batch1", type=int, default=None, help="stage-1 batch (default by device)")
    p.add_argument("--batch2", type=int, default=None, help="stage-2 batch (default by device)")
    p.add_argument("--stage1-lr", type=float, default=None)
    p.add_argument("--stage2-lr", type=float, default=None)
    p.add_argument(
        "--cond-dropout",
        type=float,
        default=None,
        help="fraction of stage-2 steps without the pose / sketch (default 0.2): the unconditional "
        "branch edits without a sketch",
    )
    p.add_argument(
        "--thin-strokes",
        type=float,
        default=None,
        help="natural data: fraction of stage-2 sketches drawn as thin lines inside the mask, as a user "
        "draws, rather than the dense XDoG map (default 0)",
    )
    p.add_argument("--workers", type=int, default=None, help="data worker processes (default by device)")
    p.add_argument(
        "--token-pool",
        type=int,
        default=None,
        help="stage-2 (and ImageBART) token pool: the first N training items, each made once (default: "
        "CPU only, encoded up front; with data workers the pool fills as they make it)",
    )
    p.add_argument(
        "--reuse1",
        type=int,
        default=None,
        help="stage-1 steps per generated batch, under flips/transposes (default 3 on GPU, 1 on CPU)",
    )
    p.add_argument("--n-eval", type=int, default=None, help="test cases per metric (default 200 GPU, 20 CPU)")
    p.add_argument("--n-layer", type=int, default=None)
    p.add_argument("--n-embd", type=int, default=None)
    p.add_argument("--no-cond-map", action="store_true", help="no per-token condition cells (ablation)")
    p.add_argument(
        "--imagebart-share",
        type=float,
        default=None,
        help="fraction of the training time for ImageBART on the same first stage (default 0: none)",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="iLAT* ablation: both stages without two-stream convolutions (evaluated in mode ilat*)",
    )
    p.add_argument(
        "--val-edits",
        type=int,
        default=None,
        help="stage 2 also edits this many validation cases every 1000 steps and at its end; the export "
        "takes the transformer of the best of those steps (default 0: the last step)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="start over even if --out holds runs")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("export", help="bundle a stage-1 + stage-2 run pair as a loadable model")
    p.add_argument(
        "--transformer",
        required=True,
        help="stage-2 run directory (or an ImageBART run directory); with --first-stage a model "
        "(bundled name or NAME.json) whose transformer is kept",
    )
    p.add_argument(
        "--first-stage",
        default=None,
        help="a decoder-only run (`train vqgan --init MODEL --decoder-only`): write the --transformer "
        "model with this run's decoder (its encoder and codebook must be the model's, bit for bit)",
    )
    p.add_argument("--out", required=True, help="output path (NAME -> NAME.json + NAME.stage{1,2}.safetensors)")
    p.add_argument("--name", default=None)
    p.add_argument("--description", default="")
    p.add_argument(
        "--dtype",
        default="float16",
        choices=["float16", "float32"],
        help="storage precision (weights load back as float32)",
    )
    p.add_argument("--single-file", action="store_true", help="the older one-file format")
    p.add_argument(
        "--best",
        action="store_true",
        help="the transformer of the step with the best validation edits (a run trained with --val-edits)",
    )

    p = sub.add_parser("eval", help="held-out metrics of a model (PSNR, perplexity, pose following, speed)")
    p.add_argument(
        "--model",
        required=True,
        help="bundled model name, NAME.json path, or a first-stage run directory "
        "(then only the reconstruction is measured)",
    )
    p.add_argument("--data", default=None, help="'pose' or 'natural' (default: from the model's condition)")
    p.add_argument("--split", default="test")
    p.add_argument("--n-recon", type=int, default=100, help="images for the reconstruction PSNR")
    p.add_argument("--n-ppl", type=int, default=200, help="samples for the masked-token perplexity")
    p.add_argument("--n-pose", type=int, default=200, help="pairs for the pose-following check (pose models)")
    p.add_argument(
        "--wrong-pose",
        default="both",
        choices=["source", "other", "both"],
        help="wrong poses to compare against: source, other (another pair's), or both",
    )
    p.add_argument("--n-speed", type=int, default=11, help="timed edits (128x128, 30%% masked)")
    p.add_argument(
        "--blend",
        default="seamless",
        choices=["seamless", "alpha"],
        help="compositing of the edits (pose following, speed): seamless (default) or alpha (pasted as decoded)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--plain",
        action="store_true",
        help="an iLAT* ablation model (stage 1 trained --plain): tokens from the plain encoder, edits in mode ilat*",
    )


def _set(cfg, args, names):
    for n in names:
        v = getattr(args, n, None)
        if v is not None:
            setattr(cfg, n, v)


WRONG_POSES = {"source": ("source",), "other": ("other",), "both": ("source", "other")}
_COMMON = (
    "data",
    "steps",
    "batch_size",
    "lr",
    "warmup",
    "seed",
    "workers",
    "log_every",
    "val_every",
    "sample_every",
    "save_every",
    "val_size",
    "budget_minutes",
)


def _check_out(args):
    """Check --out against --resume / --overwrite; a resume without --steps keeps the run's
    own step count (the default would silently stretch its schedule to 20000 steps)."""
    from napari_ilat.train.common import has_checkpoint, read_run

    out = Path(args.out)
    if args.resume and not has_checkpoint(out):
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    if not args.resume and has_checkpoint(out) and not args.overwrite:
        raise ValueError(f"{out} already holds a checkpoint; pass --resume to continue it or --overwrite")
    if args.resume and args.steps is None:
        args.steps = read_run(out)["train"]["steps"]


def _run_options(args) -> dict:
    """The keywords every training command's ``train()`` takes from the shared options."""
    return dict(
        resume=args.resume,
        device=args.device,
        precision=args.precision,
        stop_at=args.stop_at,
        time_limit=args.time_limit,
        quiet=args.quiet,
    )


def run(args) -> int:
    cmd = args.train_command
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if cmd == "vqgan":
        from napari_ilat.engine.vqgan import VQGANConfig
        from napari_ilat.train.first_stage import load_first_stage_weights
        from napari_ilat.train.stage1 import Stage1Config, train

        _check_out(args)
        cfg = Stage1Config()
        _set(
            cfg,
            args,
            _COMMON
            + (
                "crop",
                "mask_prob",
                "reuse",
                "perceptual_weight",
                "disc_start",
                "disc_weight",
                "hue_weight",
                "restart_every",
            ),
        )
        cfg.plain = cfg.plain or args.plain
        cfg.decoder_only = cfg.decoder_only or args.decoder_only
        if cfg.decoder_only and not (args.init or args.resume):
            raise ValueError("--decoder-only needs --init (the first stage whose decoder to train)")
        mc = VQGANConfig(
            resolution=args.resolution,
            ch=args.ch,
            ch_mult=args.ch_mult,
            num_res_blocks=args.num_res_blocks,
            attn_resolutions=args.attn_resolutions,
            z_channels=args.z_channels,
            embed_dim=args.embed_dim,
            n_embed=args.n_embed,
        )
        init = None
        if args.init and not args.resume:
            mc, init = load_first_stage_weights(args.init, None)
        return _train(train, args, cfg, mc, args.out, init_weights=init)
    if cmd == "transformer":
        from napari_ilat.train.stage2 import Stage2Config, train

        _check_out(args)
        cfg = Stage2Config()
        _set(cfg, args, _COMMON + ("cond", "cond_dropout", "causal_frac", "thin_strokes", "token_pool", "val_edits"))
        cfg.plain = cfg.plain or args.plain
        if not args.resume and not args.first_stage and not args.init:
            raise ValueError("--first-stage is required (a stage-1 run directory or a VQGAN checkpoint)")
        arch = dict(
            n_layer=args.n_layer,
            n_head=args.n_head,
            n_embd=args.n_embd,
            dropout=args.dropout,
            pose_freqs=args.pose_freqs,
        )
        kw = dict(first_stage=args.first_stage, first_stage_config=args.first_stage_config, init=args.init)
        return _train(train, args, cfg, arch, args.out, **kw)
    if cmd == "imagebart":
        from napari_ilat.train.imagebart import ImageBARTTrainConfig, export, train

        _check_out(args)
        cfg = ImageBARTTrainConfig()
        _set(cfg, args, _COMMON + ("token_pool", "cond", "cond_dropout", "val_edits", "val_edits_every"))
        if not args.resume and not args.first_stage and not args.init:
            raise ValueError("--first-stage is required (e.g. --first-stage natural, or a NAME.json)")
        arch = dict(
            n_stages=args.n_stages,
            betas=args.betas,
            n_enc_layer=args.n_enc_layer,
            n_dec_layer=args.n_dec_layer,
            n_head=args.n_head,
            n_embd=args.n_embd,
            dropout=args.dropout,
        )
        kw = dict(first_stage=args.first_stage, first_stage_config=args.first_stage_config, init=args.init)
        rc = _train(train, args, cfg, arch, args.out, **kw)
        if rc:
            return rc  # interrupted: nothing to export yet
        if args.export:  # a run that scored validation edits exports its best step
            from napari_ilat.train.common import read_best

            for p in export(args.out, args.export, best=read_best(args.out) is not None):
                print(f"{p}  ({Path(p).stat().st_size / 2**20:.2f} MiB)")
        return 0
    if cmd == "recipe":
        from napari_ilat.train.common import has_checkpoint
        from napari_ilat.train.recipe import RecipeConfig
        from napari_ilat.train.recipe import run as run_recipe

        if not args.minutes > 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        out = Path(args.out)
        if not args.overwrite and any(has_checkpoint(out / s) for s in ("stage1", "stage2", "imagebart")):
            raise ValueError(f"{out} already holds recipe runs; pass --overwrite to start over")
        if args.overwrite:
            import shutil

            for s in ("stage1", "stage2", "imagebart"):
                shutil.rmtree(out / s, ignore_errors=True)
        cfg = RecipeConfig(
            data=args.data,
            minutes=args.minutes,
            seed=args.seed,
            name=args.name,
            cond_map=not args.no_cond_map,
            plain=args.plain,
        )
        _set(
            cfg,
            args,
            (
                "stage1_share",
                "batch1",
                "batch2",
                "stage1_lr",
                "stage2_lr",
                "cond_dropout",
                "thin_strokes",
                "workers",
                "reuse1",
                "token_pool",
                "n_eval",
                "n_layer",
                "n_embd",
                "imagebart_share",
                "init",
                "val_edits",
            ),
        )
        from napari_ilat.train.common import stop_on_signal

        with stop_on_signal():
            rec = run_recipe(cfg, out, device=args.device, precision=args.precision, quiet=args.quiet)
        print(json.dumps({k: rec[k] for k in ("model", "phases", "eval", "stopped") if k in rec}, indent=2))
        return 130 if "stopped" in rec else 0
    if cmd == "export":
        from napari_ilat.train.export import export, with_decoder
        from napari_ilat.train.imagebart import export as export_imagebart
        from napari_ilat.train.imagebart import is_imagebart_run

        if args.first_stage is not None:
            if args.single_file or args.best:
                raise ValueError("--first-stage writes the model's own layout; --single-file and --best do not apply")
            export, kw = with_decoder, {"decoder_run": args.first_stage}
        elif is_imagebart_run(args.transformer):  # an ImageBART run: its own files
            if args.single_file:
                raise ValueError("--single-file: ImageBART models are written as one file per stage")
            export, kw = export_imagebart, {"best": args.best}
        else:
            kw = {"single_file": args.single_file, "best": args.best}
        paths = export(
            args.transformer,
            args.out,
            name=args.name,
            description=args.description,
            dtype=args.dtype,
            **kw,
        )
        for p in paths:
            print(f"{p}  ({Path(p).stat().st_size / 2**20:.2f} MiB)")
        return 0
    if cmd == "eval":
        from napari_ilat.train.evaluate import evaluate

        res = evaluate(
            args.model,
            data=args.data,
            split=args.split,
            n_recon=args.n_recon,
            n_ppl=args.n_ppl,
            n_pose=args.n_pose,
            n_speed=args.n_speed,
            device=args.device,
            seed=args.seed,
            wrong=WRONG_POSES[args.wrong_pose],
            plain=args.plain,
            blend=args.blend,
        )
        text = json.dumps(res, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0
    raise ValueError(f"unknown train command {cmd!r}")


def _train(train, args, *a, **kw) -> int:
    """Run a training function with the shared options, Ctrl-C / SIGTERM turned into a clean
    stop (:func:`~napari_ilat.train.common.stop_on_signal`), and print its summary. 0, or
    the shell's status for an interrupted command (128 + SIGINT) once the run stopped on
    request with its checkpoint saved."""
    from napari_ilat.train.common import stop_on_signal

    with stop_on_signal() as request:
        rec = train(*a, **_run_options(args), **kw)
    _summary(rec)
    if not request.stopped:
        return 0
    print(f"interrupted: the checkpoint in {args.out} is complete; continue with --resume", file=sys.stderr)
    return 130


def _summary(rec: dict):
    last = rec["history"][-1] if rec.get("history") else {}
    extra = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step" and isinstance(v, float))
    print(
        f"{rec['stage']}: step {rec['step']}, {rec['elapsed_s'] / 60:.1f} min"
        + (f"; validation at step {last['step']}: {extra}" if last else ""),
        file=sys.stderr,
    )
