"""Bundle a continued model as one of the package's models, with its provenance.

    python scripts/bundle.py RUN/pose/pose.json --as pose --gpu "NVIDIA H100 80GB HBM3, alone" \
        --command "SEED=5 MODELS=pose ... bash scripts/gpu_recipe.sh 8 /tmp/run continue"

The new JSON (an export of `train recipe --init NAME`, `train imagebart --init NAME`, ...)
replaces src/napari_ilat/weights/NAME.json. Its weights files are copied beside it under the
bundled names, except a file whose sha256 equals a file already bundled: a first stage kept
bit for bit stays one file (and an ImageBART model on the natural first stage points at
natural.stage1.safetensors). `training.lineage` gets one more run (device, minutes,
command, steps, the step exported), the run before it is marked with the git commit that
holds its weights, and the totals are updated; paths of the device machine's run
directories in the records become "run N's model". A first stage kept bit for bit keeps
the record of how it was trained. The bundled model is then loaded, which checks the
sha256 of every file. Review the diff of the JSON before committing.
"""

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

from napari_ilat.engine.model import load_model

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_ilat" / "weights"


def _in_git(weights: Path, name: str) -> str:
    """The commit that holds the bundled NAME.* as they are now, or why none does."""
    try:
        git = ["git", "-C", str(weights)]
        dirty = subprocess.run([*git, "status", "--porcelain", "--", f"{name}.*"], capture_output=True, text=True)
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "not in git"
    return "not in git (uncommitted when bundled over)" if dirty.stdout.strip() else head.stdout.strip()


def _bundled_files(weights: Path) -> dict:
    """sha256 -> file name of every weights file the bundled JSONs reference, and file name ->
    the models that use it."""
    by_sha, users = {}, {}
    for j in sorted(weights.glob("*.json")):
        for entry in json.loads(j.read_text()).get("files", {}).values():
            by_sha.setdefault(entry["sha256"], entry["file"])
            users.setdefault(entry["file"], set()).add(j.stem)
    return by_sha, users


def _first_lineage(old_training: dict) -> dict:
    """A lineage whose one run is the bundled model as its JSON describes it."""
    recipe = old_training.get("recipe", {})
    return {
        "runs": [
            {
                "run": 1,
                "gpu": old_training.get("gpu") or recipe.get("device") or old_training.get("device"),
                "minutes": recipe.get("minutes") or old_training.get("train_minutes"),
                "command": old_training.get("command") or recipe.get("command"),
                "steps": old_training.get("steps"),
            }
        ]
    }


def _run_entry(n: int, training: dict, gpu: str, command: str) -> dict:
    recipe = training.get("recipe", {})
    phases = recipe.get("phases", {})
    entry = {
        "run": n,
        "gpu": gpu,
        "minutes": recipe.get("minutes") or training.get("train_minutes"),
        "command": command,
    }
    if phases:
        entry["stage1_steps"] = phases.get("stage1", {}).get("steps", 0)
        entry["stage2_steps"] = phases.get("stage2", {}).get("steps", 0)
    else:
        entry["steps"] = training.get("steps")
    if "exported_step" in training:
        entry["exported_step"] = training["exported_step"]
    return entry


def bundle(new_json: Path, name: str, gpu: str, command: str, weights: Path = WEIGHTS, beside: bool = False) -> Path:
    new_json = Path(new_json)
    old_path = weights / f"{name}.json"
    old = json.loads(old_path.read_text())
    new = json.loads(new_json.read_text())
    if new.get("kind", "ilat") != old.get("kind", "ilat"):
        raise SystemExit(
            f"{new_json} is a {new.get('kind', 'ilat')} model, the bundled {name} a {old.get('kind', 'ilat')}"
        )
    by_sha, users = _bundled_files(weights)
    copies = []
    for key, entry in new["files"].items():
        if entry["sha256"] in by_sha:  # bit for bit a bundled file: reference it, copy nothing
            entry["file"] = by_sha[entry["sha256"]]
            continue
        target = f"{name}.{key}.safetensors"
        if users.get(target, {name}) - {name}:
            raise SystemExit(f"{target} is used by {sorted(users[target] - {name})}: refusing to replace it")
        copies.append((new_json.parent / entry["file"], weights / target))
        entry["file"] = target

    old_t = old.get("training", {})
    lineage = old_t.get("lineage") or _first_lineage(old_t)
    runs = lineage["runs"]
    n = len(runs) + 1
    # the device machine's run directories mean nothing here: name the run they held
    files = new.pop("files")
    text = re.sub(r"/tmp/[^\s\"']*?\.json", f"run {n - 1}'s model", json.dumps(new, indent=2))
    new = {**json.loads(text), "files": files}
    new_t = new.setdefault("training", {})
    if "weights_in_git" not in runs[-1]:  # beside: the run before is bundled in this same commit
        where = f"the commit that bundles run {n}, beside it" if beside else _in_git(weights, name)
        runs[-1]["weights_in_git"] = where if beside else f"{where} (src/napari_ilat/weights/{name}.*)"
    runs.append(_run_entry(n, new_t, gpu, command))
    if beside:  # the same device minutes as the run before it: counted once in the total
        runs[-1]["beside_run"] = n - 1
        if new_t.get("decoder_only"):
            # its export carries the decoder run's record alone; the transformer bundled just
            # before is the one this model samples with, so its record stays the model's and
            # the decoder run becomes the first stage's record
            record = dict(new_t, note=f"decoder-only run {n}, beside run {n - 1}: encoder and codebook kept")
            new_t = new["training"] = {k: v for k, v in old_t.items() if k != "lineage"} | {"first_stage": record}
    stage1 = old["files"].get("stage1", {}).get("sha256")
    if stage1 == new["files"].get("stage1", {}).get("sha256") and "first_stage" in old_t:
        kept = old_t["first_stage"]  # a record (iLAT) or where it came from (ImageBART)
        note = "kept bit for bit from the model continued; its record"
        new_t["first_stage"] = dict(kept, note=note) if isinstance(kept, dict) else kept
    gpu_runs = [r for r in runs if r.get("minutes") is not None and "beside_run" not in r]
    lineage["gpu_minutes_total"] = round(sum(r["minutes"] for r in gpu_runs), 1)
    for k in ("stage1_steps", "stage2_steps", "steps"):
        if any(k in r for r in runs):
            lineage[f"{k}_total"] = sum(r.get(k) or 0 for r in runs)
    lineage["note"] = (
        f"{len(runs)} runs, each continuing the one before (--init); the other training fields describe the last"
    )
    new_t["lineage"] = lineage
    ordered = {k: new[k] for k in old if k in new} | {k: v for k, v in new.items() if k not in old}

    for src, dst in copies:
        shutil.copyfile(src, dst)
        dst.chmod(0o644)
    old_path.write_text(json.dumps(ordered, indent=2) + "\n")
    load_model(old_path)  # checks every file's sha256
    return old_path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the new NAME.json (its weights files beside it)")
    ap.add_argument("--as", dest="name", required=True, help="the bundled model it replaces: pose, natural, ...")
    ap.add_argument("--gpu", required=True, help="where it trained, e.g. 'NVIDIA H100 80GB HBM3, alone'")
    ap.add_argument("--command", required=True, help="the command that trained it, as run")
    ap.add_argument("--weights-dir", type=Path, default=WEIGHTS)
    ap.add_argument(
        "--beside",
        action="store_true",
        help="it trained at the same time as the run bundled before it, on the same device (a decoder-only "
        "run beside its transformer): its minutes are not added to the total",
    )
    args = ap.parse_args()
    path = bundle(Path(args.model), args.name, args.gpu, args.command, args.weights_dir, args.beside)
    print(f"{path}: run {len(json.loads(path.read_text())['training']['lineage']['runs'])} of its lineage")


if __name__ == "__main__":
    main()
