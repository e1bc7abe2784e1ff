"""Auto-mask capsule widths judged by the edit a user gets.

For held-out pose edit pairs, each rule's auto mask (``moved_joint_mask`` of the source and
the target pose, as the widget's *Auto mask from moved keypoints* paints it after a drag; a
keypoint the target hides stays where it was, as a drag leaves it) is edited with the bundled
pose model (sampling seed 0) and scored against the ground truth over one region per pair:
the union of every rule's mask and the pair's own (dilated) mask, so that a mask leaving old
limb behind and a mask regenerating more than it must are both counted.

    OMP_NUM_THREADS=1 python scripts/auto_mask_radius.py --n 80 --split validation \\
        --rules image,0.15+2,0.2+2,0.25+1,0.25+2,0.2+3,0.3+2,0.4+2

Rules: ``image`` (6% of the image's side, the rule before the twenty-first session) or
``C+B`` (C x the figure's median bone length + B px; the default is
``engine.pose_mask.RADIUS_PER_BONE`` + ``RADIUS_MARGIN``). Prints one JSON line per rule: mean
PSNR and the paired difference from the first rule (+- one standard error), the masked
fraction, and how often the drawn moved limbs are >= 95% inside the mask.
"""

import argparse
import json

import numpy as np
import torch

from napari_ilat import edit, load_model
from napari_ilat.data.pose_scenes import make_edit_pair
from napari_ilat.data.splits import split_seeds
from napari_ilat.engine.pose_mask import hidden_kept, median_bone_length, moved_joint_mask
from napari_ilat.engine.skeleton import PART_NAMES
from napari_ilat.evaluation.metrics import paired_difference, psnr


def radius(rule: str, shape, bone) -> float:
    if rule == "image" or bone is None:
        return max(3.0, 0.06 * min(shape))
    c, b = (float(x) for x in rule.split("+"))
    return c * bone + b


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--rules", default="image,0.25+2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model("pose")
    rules = args.rules.split(",")
    scores = {r: [] for r in rules}
    fractions = {r: [] for r in rules}
    covered = {r: [] for r in rules}
    for s in split_seeds(args.split, args.n):
        p = make_edit_pair(int(s), model.resolution)
        new = hidden_kept(p.source_pose, p.target_pose)  # as a drag leaves it
        shape = p.mask.shape
        bone = median_bone_length(p.source_pose, new)
        masks = {r: moved_joint_mask(p.source_pose, new, shape, radius=radius(r, shape, bone)) for r in rules}
        region = p.mask.copy()
        for m in masks.values():
            region |= m
        moved = [PART_NAMES.index(name) for name in p.moved_parts]
        limb = np.isin(p.source_labels, moved) | np.isin(p.target_labels, moved)
        for r, m in masks.items():
            out = edit(p.source, m, pose=new, model=model, seed=0) if m.any() else p.source
            scores[r].append(psnr(out, p.target, region))
            fractions[r].append(m.mean())
            covered[r].append((m & limb).sum() >= 0.95 * max(limb.sum(), 1))
    for r in rules:
        diff, se = paired_difference(scores[r], scores[rules[0]])
        row = {
            "rule": r,
            "split": args.split,
            "n": args.n,
            "psnr_region": round(float(np.mean(scores[r])), 2),
            "vs_first": round(diff, 2),
            "se": round(se, 2),
            "masked": round(float(np.mean(fractions[r])), 4),
            "limb_covered_95": round(float(np.mean(covered[r])), 3),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
