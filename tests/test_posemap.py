"""The pose map: keypoints rendered as blobs and sticks, and each token's own cell of it."""

import numpy as np
import pytest
import torch

from napari_ilat.engine.conditions import normalize_keypoints
from napari_ilat.engine.model import ILATModel
from napari_ilat.engine.posemap import N_CHANNELS, render_pose_map
from napari_ilat.engine.skeleton import NECK, R_ELBOW, R_SHOULDER, R_WRIST, SKELETON
from napari_ilat.engine.transformer import LATransformer, TransformerConfig


def pose_with(points: dict, res=64):
    kp = np.full((18, 3), -1.0)
    kp[:, 2] = 0
    for k, (x, y) in points.items():
        kp[k] = (x, y, 1)
    return torch.tensor(normalize_keypoints(kp, (0, 0, res, res)), dtype=torch.float32)[None]


def test_blobs_sit_on_their_keypoints_and_sticks_on_their_bones():
    kp = pose_with({R_SHOULDER: (10, 20), R_ELBOW: (30, 20), NECK: (10, 40)})
    m = render_pose_map(kp, 64)[0]
    assert m.shape == (N_CHANNELS, 64, 64) and 0 <= m.min() and m.max() <= 1
    # image (x = column, y = row): the blob of the elbow peaks at row 20, column 30
    assert np.unravel_index(int(m[R_ELBOW].argmax()), (64, 64)) == (20, 30)
    bone = 18 + SKELETON.index((R_SHOULDER, R_ELBOW))
    assert m[bone, 20, 10:31].min() > 0.99  # along the upper arm
    assert m[bone, 26, 20] < 1e-6  # six pixels off it
    assert m[bone, 20, 40] < 1e-6  # beyond the elbow: a segment, not a line
    # invisible keypoints draw nothing, nor do bones that touch them
    assert m[R_WRIST].max() == 0
    assert m[18 + SKELETON.index((R_ELBOW, R_WRIST))].max() == 0
    assert m[18 + SKELETON.index((NECK, R_SHOULDER))].max() > 0.99


def test_a_keypoint_reaches_the_tokens_under_it_and_not_far_ones():
    """With cond_map, moving the elbow changes the per-token embedding of the cells it
    leaves and enters, and no cell far from both."""
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=32, grid=16, n_layer=1, n_head=2, n_embd=16, cond="pose", cond_map=True)
    model = LATransformer(cfg)
    a = pose_with({R_ELBOW: (20, 20)}, res=128)
    b = pose_with({R_ELBOW: (100, 100)}, res=128)
    diff = (model.condition_cells(a, 1) - model.condition_cells(b, 1)).abs().sum(-1).view(16, 16)
    assert diff[2, 2] > 0 and diff[12, 12] > 0  # 128 px / 16 tokens: 8 px per token
    assert diff[7, 7] == 0 and diff[2, 12] == 0
    assert model.condition_cells(None, 1) is None


def test_cond_map_default_off_and_old_configs_load(tmp_path):
    old = TransformerConfig(cond="pose").to_dict()
    del old["cond_map"]  # configs written before the option existed
    assert TransformerConfig.from_dict(old).cond_map is False
    model = ILATModel.tiny(cond="pose", cond_map=True)
    from napari_ilat import load_model, save_model

    path = save_model(model, tmp_path / "m")
    loaded = load_model(path)
    assert loaded.config.transformer.cond_map
    kp = torch.rand(1, 18, 3)
    assert torch.equal(loaded.transformer.condition_cells(kp, 1), model.transformer.condition_cells(kp, 1))


@pytest.mark.parametrize("cond", ["pose", "sketch"])
def test_edit_with_a_cond_map_model(cond):
    from napari_ilat import edit

    model = ILATModel.tiny(cond=cond, cond_map=True)
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    if cond == "pose":
        kw, other = ({"pose": np.tile([x, x, 1.0], (18, 1))} for x in (12.0, 20.0))
    else:
        kw, other = {"sketch": np.zeros((32, 32))}, {"sketch": np.eye(32)}
    out1 = edit(img, mask, model=model, seed=1, **kw)
    assert np.array_equal(out1, edit(img, mask, model=model, seed=1, **kw))
    cold = dict(model=model, seed=1, temperature=0.05)  # near-greedy: small logit changes show
    assert not np.array_equal(edit(img, mask, **cold, **kw)[mask], edit(img, mask, **cold, **other)[mask])
