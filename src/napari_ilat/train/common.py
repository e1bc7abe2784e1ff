"""Plumbing shared by both training stages: devices, precision, distributed set-up,
checkpoints (safetensors + JSON, never pickle), progress and image grids.

Checkpoint layout of a run directory (``--out DIR``)::

    DIR/run.json             stage, model config, training config, step, metrics history
    DIR/model.safetensors    the weights being trained (float32)
    DIR/state.safetensors    optimizer state + RNG states (raw tensors only)
    DIR/samples/*.png        periodic sample grids
    DIR/log.jsonl            one JSON line per logged step

Both files are written to a temporary name and renamed, so a run killed while saving
keeps its previous checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

# --------------------------------------------------------------------------- device / precision


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda (this rank's GPU under torchrun), then mps, then cpu."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for, but torch sees no CUDA GPU")
    return dev


def pick_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA GPUs that support it, else fp16 on CUDA, fp32 elsewhere.
    Mixed precision is only used on CUDA (CPU autocast is slower than fp32 here)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type != "cuda":
        if precision not in ("auto", "fp32"):
            raise ValueError(f"--precision {precision} needs a CUDA device (got {device})")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str) -> torch.amp.GradScaler:
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")


# --------------------------------------------------------------------------- distributed


class Dist:
    """Rank / world size; initialises torch.distributed when launched by torchrun."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.enabled = self.world > 1
        # a group set up by the caller (tests, notebooks) is left for the caller to close
        self.owner = self.enabled and not dist.is_initialized()
        if self.owner:
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def mean(self, value: float, device) -> float:
        """Average a Python float over ranks (for logging)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool, device) -> bool:
        """True on every rank if it is True on any (e.g. a time limit: every rank must agree
        to stop, or the others hang in the next all-reduce)."""
        return self.sum(torch.tensor([float(flag)], device=device)).item() > 0

    def close(self):
        if self.owner and dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> torch.Generator:
    """Seed torch's global RNG (dropout) per rank and return the training-loop generator
    (masks, crops, condition dropout), also per rank so ranks see different batches."""
    torch.manual_seed(seed * 1000 + rank)
    g = torch.Generator()
    g.manual_seed(seed * 1000 + rank + 1)
    return g


# --------------------------------------------------------------------------- data order


def epoch_indices(n: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This rank's shuffled indices for ``epoch`` (torch's DistributedSampler, so ranks get
    disjoint shards of the same permutation)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


def batch_indices(n: int, batch: int, seed: int, rank: int, world: int, start_step: int):
    """Endless stream of index batches; step s always gets the same batch, so a resumed run
    continues exactly where the interrupted one stopped (nothing is generated to skip)."""
    per_epoch = (n // world) // batch
    if per_epoch < 1:
        raise ValueError(f"dataset of {n} items is too small for batch {batch} x {world} ranks")
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        idx = epoch_indices(n, epoch, seed, rank, world)
        for j in range(k, per_epoch):
            yield idx[j * batch : (j + 1) * batch]
        step = (epoch + 1) * per_epoch


# --------------------------------------------------------------------------- checkpoints


def atomic_save_file(tensors: dict, path: Path, metadata=None):
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state -> flat {name: tensor} plus a JSON-able description of the rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            name = f"{prefix}.{pid}.{key}"
            if torch.is_tensor(val):
                tensors[name] = val.detach().cpu().contiguous()
            else:
                scalars[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict):
    state: dict = {}
    for name, val in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        pid, key = name[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    for name, val in meta["scalars"].items():
        pid, key = name[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(out: Path, *, modules: dict, optimizers: dict, generator: torch.Generator, scaler, run: dict):
    """Write DIR/model.safetensors (modules' weights, prefixed by their key), DIR/state.safetensors
    (optimizers, RNG) and DIR/run.json (``run`` plus the optimizers' hyper-parameters)."""
    out = Path(out)
    weights = {}
    for key, module in modules.items():
        for k, v in module.state_dict().items():
            weights[f"{key}.{k}"] = v.detach().float().cpu().contiguous()
    state, opt_meta = {}, {}
    for key, opt in optimizers.items():
        t, m = _optimizer_tensors(f"opt.{key}", opt)
        state.update(t)
        opt_meta[key] = m
    state["rng.torch"] = torch.get_rng_state()
    state["rng.loop"] = generator.get_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng.cuda.{i}"] = s
    run = dict(run)
    run["optimizers"] = opt_meta
    run["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    atomic_save_file(weights, out / "model.safetensors")
    atomic_save_file(state, out / "state.safetensors")
    atomic_write_text(json.dumps(run, indent=1) + "\n", out / "run.json")


def has_checkpoint(out) -> bool:
    out = Path(out)
    return all((out / f).exists() for f in ("run.json", "model.safetensors", "state.safetensors"))


def read_run(out) -> dict:
    return json.loads((Path(out) / "run.json").read_text())


def load_weights(out, key: str) -> dict:
    """The ``key.`` weights of a run directory's model.safetensors, prefix stripped."""
    sd = load_file(str(Path(out) / "model.safetensors"))
    p = key + "."
    return {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}


def load_checkpoint(out, *, modules: dict, optimizers: dict, generator: torch.Generator, scaler) -> dict:
    out = Path(out)
    run = read_run(out)
    for key, module in modules.items():
        module.load_state_dict(load_weights(out, key), strict=True)
    state = load_file(str(out / "state.safetensors"))
    for key, opt in optimizers.items():
        _load_optimizer(f"opt.{key}", opt, state, run["optimizers"][key])
    torch.set_rng_state(state["rng.torch"])
    generator.set_state(state["rng.loop"])
    if torch.cuda.is_available():
        cuda = [state[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in state]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    if scaler is not None and run.get("scaler"):
        scaler.load_state_dict(run["scaler"])
    return run


def config_from_dict(cls, d: dict):
    """Dataclass from a dict, ignoring unknown keys (older/newer run.json files)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def config_to_dict(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else asdict(cfg)


# --------------------------------------------------------------------------- learning rate


def lr_at(
    step: int, base: float, warmup: int, total: int, min_ratio: float = 0.1, progress: float | None = None
) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio * base`` at ``total`` steps, or, with
    ``progress`` (the fraction of a time budget used), at the end of the budget."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup)) if progress is None else min(1.0, progress)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def set_lr(opt: torch.optim.Optimizer, lr: float):
    for g in opt.param_groups:
        g["lr"] = lr


# --------------------------------------------------------------------------- progress / output


class Progress:
    """Training progress on stderr: tqdm's bar with the running (EMA) losses on a terminal;
    plain lines every ``every`` steps otherwise (log files stay readable)."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, every: int = 10):
        from tqdm import tqdm

        self.total, self.step, self.enabled, self.every = total, start, enabled, every
        self.t0, self.s0 = time.time(), start
        self.ema: dict[str, float] = {}
        self.tty = sys.stderr.isatty()
        self.bar = (
            tqdm(total=total, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True)
            if enabled and self.tty
            else None
        )

    def update(self, step: int, **losses):
        for k, v in losses.items():
            self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in self.ema.items()}, refresh=False)
        self.step = step
        if self.bar is not None or not self.enabled or (step % self.every and step != self.total):
            return
        rate = (step - self.s0) / max(1e-9, time.time() - self.t0)
        loss = " ".join(f"{k} {v:.4f}" for k, v in self.ema.items())
        print(f"step {step}/{self.total} {loss} | {rate:.2f} it/s", file=sys.stderr, flush=True)

    def message(self, text: str):
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B,C,H,W) in [-1,1] (C = 1 or 3) -> (B,H,W,3) uint8."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).numpy()


def save_grid(rows: list[np.ndarray], path: Path, gap: int = 2):
    """Rows of (B,H,W,3) uint8 images -> one PNG (rows stacked vertically)."""
    from PIL import Image

    h, w = rows[0].shape[1:3]
    n = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = img
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def log_line(out: Path, record: dict):
    with open(Path(out) / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def save_rank_rng(out, D: Dist, generator: torch.Generator):
    """Every rank's own RNG states (they differ per rank), beside the checkpoint."""
    state = {"loop": generator.get_state(), "torch": torch.get_rng_state()}
    atomic_save_file(state, Path(out) / f"rng.rank{D.rank}.safetensors")


def read_resume(out, stage: str, cls, cfg):
    """The saved run record of a run being resumed and its training config, in which only
    ``steps`` and, when given, ``budget_minutes`` are taken from ``cfg`` (what a resume may
    change: how long to train)."""
    run = read_run(out)
    if run.get("stage") != stage:
        raise ValueError(f"{out} holds a {run.get('stage')!r} run, not a {stage} run")
    resumed = config_from_dict(cls, run["train"])
    resumed.steps = cfg.steps
    if getattr(cfg, "budget_minutes", 0):  # a new time budget (e.g. stop a long run sooner)
        resumed.budget_minutes = cfg.budget_minutes
    return run, resumed


def restore(out, D: Dist, *, modules: dict, optimizers: dict, generator: torch.Generator, scaler):
    """Load the last checkpoint into the given objects; returns (step, history, elapsed_s)."""
    run = load_checkpoint(out, modules=modules, optimizers=optimizers, generator=generator, scaler=scaler)
    generator.set_state(load_rank_rng(out, D.rank, generator.get_state()))
    return run["step"], run.get("history", []), run.get("elapsed_s", 0.0)


def clipped_step(opt, scaler, loss, params, max_norm: float = 1.0) -> None:
    """One optimiser step on ``loss`` through the (possibly disabled) grad scaler, with the
    gradient norm of ``params`` clipped to ``max_norm`` on unscaled gradients. The caller calls
    ``scaler.update()`` once all of the step's optimisers have stepped."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(opt)


def run_record(
    stage: str, step: int, model: dict, train, D: Dist, device, precision, history, elapsed_s, **extra
) -> dict:
    """The run.json record every training command writes with its checkpoints (``extra``:
    stage-specific fields, e.g. the first stage a transformer was trained on)."""
    return {
        "stage": stage,
        "step": step,
        "model": model,
        "train": asdict(train),
        **extra,
        "world_size": D.world,
        "device": str(device),
        "precision": precision,
        "history": history,
        "elapsed_s": elapsed_s,
    }


def save_all(out, D: Dist, *, modules: dict, optimizers: dict, generator: torch.Generator, scaler, run: dict):
    """One checkpoint of a (possibly distributed) run: every rank's RNG, rank 0's weights,
    optimizer state and run record; the barrier keeps ranks from racing past a half-written save."""
    save_rank_rng(out, D, generator)
    if D.main:
        save_checkpoint(out, modules=modules, optimizers=optimizers, generator=generator, scaler=scaler, run=run)
    D.barrier()


_STOP = threading.Event()  # set by stop_on_signal's handler, read at the end of each step


def stop_requested() -> bool:
    """True once Ctrl-C or SIGTERM asked the runs inside :func:`stop_on_signal` to stop
    (always False outside one, so a stop never leaks into later runs of the process)."""
    return _STOP.is_set()


class StopRequest:
    """What :func:`stop_on_signal` yields: ``stopped`` tells, after the block, whether a stop
    was asked for inside it."""

    stopped = False


@contextmanager
def stop_on_signal():
    """Turn Ctrl-C (SIGINT) and SIGTERM into a clean stop: the step in progress finishes, the
    run checkpoints and returns (resume with ``--resume``), instead of dying mid-step and
    losing everything since the last periodic checkpoint. A second Ctrl-C interrupts at once.
    Only the main thread can own signal handlers; elsewhere the block runs unchanged."""
    request = StopRequest()
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if _STOP.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        _STOP.set()
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to abort at once)",
            file=sys.stderr,
            flush=True,
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        request.stopped = _STOP.is_set()
        _STOP.clear()


def end_of_step(
    D: Dist, device, *, step: int, stop: int, save_every: int, t0: float, time_limit: float | None, save, bar: Progress
) -> bool:
    """Checkpoint every ``save_every`` steps, at ``stop``, when the time limit is reached and
    when a stop was requested (:func:`stop_on_signal`), decided on all ranks together so they
    stop at the same step; True means stop now."""
    timed_out = time_limit is not None and (time.time() - t0) > time_limit * 60
    halt = D.any(timed_out or stop_requested(), device)  # one collective for both reasons
    if step % save_every == 0 or step == stop or halt:
        save()
    if halt:
        why = "stopped on request" if stop_requested() else "time limit reached"
        bar.message(f"{why} at step {step}, checkpoint saved; resume with --resume")
    return halt


def budget_progress(t0: float, elapsed: float, budget_minutes: float) -> float | None:
    """Fraction of a training time budget used (None when the run has no budget: it is then
    scheduled by steps). A budgeted run's learning rate decays over the budget, not over
    --steps, and the run ends when the budget is spent, so a schedule fits any device."""
    if not budget_minutes:
        return None
    return (time.time() - t0 + elapsed) / (budget_minutes * 60)


def budget_spent(D: Dist, device, progress: float | None) -> bool:
    """All ranks agree on the end of the budget (so they stop at the same step). Without a
    budget (the same config on every rank) no collective is needed: False at once."""
    if progress is None:
        return False
    return D.any(progress >= 1.0, device)


def load_rank_rng(out, rank: int, default: torch.Tensor) -> torch.Tensor:
    """Restore this rank's global RNG; returns its loop-generator state (``default`` when the
    run was saved with a different number of processes)."""
    p = Path(out) / f"rng.rank{rank}.safetensors"
    if not p.exists():
        return default
    state = load_file(str(p))
    torch.set_rng_state(state["torch"])
    return state["loop"]


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state (to check that DDP ranks ended identical)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pool_reporter(t0: float, every_s: float = 60.0):
    """An ``encode_items`` report that prints the pool's progress at most every
    ``every_s`` seconds (on a CPU a pool of thousands takes many minutes)."""
    last = [t0]

    def report(done, total):
        now = time.time()
        if now - last[0] >= every_s and done < total:
            last[0] = now
            rate = done / max(now - t0, 1e-9)
            left = (total - done) / max(rate, 1e-9) / 60
            print(f"token pool: {done}/{total} items, {rate:.1f} items/s, ~{left:.0f} min left", flush=True)

    return report


# --------------------------------------------------------------------------- validation edits

BEST = "best.safetensors"  # the weights of the step with the best validation edits


def validation_edit_psnr(model, cases, mode: str, device) -> float:
    """Mean in-mask PSNR of ``edit()`` on ``cases`` ((seed, source, target, mask, condition
    kwargs), as evaluation.quality makes them) with the model's current weights."""
    from napari_ilat.engine.editing import edit
    from napari_ilat.engine.reuse import FIRST_STAGE_CACHE
    from napari_ilat.evaluation.metrics import PSNR_CAP, psnr

    FIRST_STAGE_CACHE.clear()  # its entries (keyed by weights version) are of no use once training moves on
    try:
        scores = [
            psnr(edit(s, m, model=model, mode=mode, seed=seed, device=device, **c), t, m, cap=PSNR_CAP)
            for seed, s, t, m, c in cases
        ]
    finally:
        FIRST_STAGE_CACHE.clear()
    return float(np.mean(scores))


def read_best(out) -> dict | None:
    """{"step", "edit_psnr"} of a run's best.safetensors, or None."""
    from safetensors import safe_open

    path = Path(out) / BEST
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {"step": int(meta["step"]), "edit_psnr": float(meta["edit_psnr"])}


def keep_if_best(out, best: dict | None, step: int, score: float, module: torch.nn.Module) -> dict:
    """Write ``module``'s weights to out/best.safetensors (step and score in its metadata)
    when ``score`` beats ``best``; returns the best so far."""
    if best is not None and score <= best["edit_psnr"]:
        return best
    best = {"step": step, "edit_psnr": score}
    weights = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_save_file(weights, Path(out) / BEST, metadata={k: str(v) for k, v in best.items()})
    return best


def exported_weights(run_dir, module: str, run: dict, best: bool) -> tuple[dict, dict]:
    """The weights to export for ``module`` of a run: its last checkpoint's, or (``best``) those
    of best.safetensors, with the run record marked with the step they come from."""
    if not best:
        return load_weights(run_dir, module), run
    chosen = read_best(run_dir)
    if chosen is None:
        raise FileNotFoundError(f"{run_dir} has no {BEST}: train with --val-edits N to keep one")
    return load_file(str(Path(run_dir) / BEST)), {**run, "exported": {"best": chosen, "last_step": run["step"]}}


def exported_record(run: dict) -> dict:
    """What an export's ``training`` record says of a best-step export (``exported_weights``
    with ``best``): the step and that step's validation; {} for the last step."""
    if "exported" not in run:
        return {}
    chosen = run["exported"]["best"]
    validation = next((h for h in run.get("history", []) if h["step"] == chosen["step"]), chosen)
    return {"exported_step": chosen["step"], "validation": validation}


def training_batches(train_ds, cfg, D, start: int, encode, out: Path, quiet: bool, what: str = "items"):
    """The encoded training batches of a token-level trainer (the transformer, ImageBART),
    step ``start`` on, by ``cfg.token_pool`` / ``cfg.workers``:

    * no pool: fresh items every step, made by ``cfg.workers`` DataLoader processes (0: here);
    * a pool, no workers (the CPU recipe): its items encoded up front, saved to
      ``token_pool.safetensors`` (a resumed run reads it back), then cycled over;
    * a pool and workers (a GPU): the same batches, the pool filled as the workers first
      make its items (:func:`~napari_ilat.train.data.pool_filled_by_workers`).
    """
    from safetensors.torch import load_file

    from napari_ilat.train.data import encode_items, loader, pool_filled_by_workers

    size = cfg.token_pool or len(train_ds)

    def index_batches():
        return batch_indices(size, cfg.batch_size, cfg.seed, D.rank, D.world, start)

    if cfg.token_pool <= 0:
        return (encode(b) for b in loader(train_ds, index_batches(), cfg.workers))
    if cfg.workers > 0:
        return pool_filled_by_workers(train_ds, index_batches, size, cfg.workers, encode)
    pool_path = Path(out) / "token_pool.safetensors"
    if D.main and not pool_path.exists():
        t0 = time.time()
        report = None if quiet else pool_reporter(t0)
        pool = encode_items(encode, train_ds, list(range(size)), report=report)
        atomic_save_file(pool, pool_path)
        if not quiet:
            print(f"token pool: {size} {what} encoded in {time.time() - t0:.0f} s", flush=True)
    D.barrier()
    pool = load_file(str(pool_path))
    return ({k: v[b] for k, v in pool.items()} for b in index_batches())


def give_colour_table(vqgan, first_stage: dict, where, source=None, compute: bool = True) -> None:
    """Give a run's frozen first stage its colour table (the context palette's,
    engine/palette.py): the one ``first_stage`` (its run.json entry) holds; else the one its
    ``source`` carries (a model, a run: :func:`~napari_ilat.train.first_stage.source_colours`),
    the same weights; else, with ``compute``, decoded now. So a resumed run, a run on a
    bundled model's first stage and the export do not decode every code again (a minute of
    a CPU at the bundled size)."""
    from napari_ilat.engine.palette import code_colours, read_table
    from napari_ilat.train.first_stage import source_colours

    read_table(vqgan, first_stage, where)
    if vqgan.code_colours is None and source is not None:
        vqgan.code_colours = source_colours(source, vqgan.config.n_embed)
    if vqgan.code_colours is None and compute:
        vqgan.code_colours = code_colours(vqgan)


def colour_table_at_start(vqgan, out, resumed_run: dict | None, source, compute: bool) -> None:
    """At the start of a run on a frozen first stage (stage 2, ImageBART): give it the colour
    table its export will carry, kept in run.json from then on. A resumed run has it in its
    run.json (``resumed_run``); a new one takes the table its ``source`` carries (a model, a
    recipe's stage-1 run), or, with ``compute``, decodes it now."""
    if resumed_run is not None:
        give_colour_table(vqgan, resumed_run["first_stage"], out, compute=compute)
    else:
        give_colour_table(vqgan, {}, out, source=source, compute=compute)


def first_stage_entry(vq_cfg, source, vqgan) -> dict:
    """run.json's ``first_stage``: its config, where it came from and its colour table when
    the run has one."""
    from napari_ilat.engine.palette import table_meta

    return {"config": vq_cfg.to_dict(), "source": source, **table_meta(vqgan)}
