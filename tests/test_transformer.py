"""The LA attention mask, the permuted formulation, and what each prediction may depend on."""

import pytest
import torch

from napari_ilat.engine.transformer import (
    LATransformer,
    TransformerConfig,
    la_mask,
    masked_token_loss,
    permutation,
    permuted_mask,
)


def random_known(n, rate, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) > rate


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_cond", [0, 3])
def test_la_mask_matches_paper_formula(seed, n_cond):
    known = random_known(20, 0.4, seed)
    m = la_mask(known, n_cond)
    k = [True] + known.tolist()  # [S] counts as known
    n = len(k)
    for i in range(n):
        for j in range(n):
            assert m[n_cond + i, n_cond + j] == (k[j] or (j <= i and not k[i]))
    assert m[:, :n_cond].all()  # everyone sees the conditions
    assert not m[:n_cond, n_cond:].any()  # conditions see only conditions (C2T = 0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_cond", [0, 2])
def test_permuted_mask_is_la_mask_unpermuted(seed, n_cond):
    """The mask used on [C, S, known, stream] equals M_LA once stream entry g_j is put back
    at the position u_j it predicts."""
    n = 16
    known = random_known(n, 0.5, seed)
    order, n_known = permutation(known[None])
    perm = permuted_mask(n_known, n_cond, n_cond + 1 + n)[0, 0]
    # seq index of [C..., S, z_1..z_N] in the permuted sequence
    where = torch.empty(n_cond + 1 + n, dtype=torch.long)
    where[: n_cond + 1] = torch.arange(n_cond + 1)
    where[n_cond + 1 + order[0]] = n_cond + 1 + torch.arange(n)
    assert torch.equal(perm[where][:, where], la_mask(known, n_cond))


def _tiny(cond="none", grid=4, vocab=None):
    cfg = TransformerConfig(
        vocab_size=vocab or grid * grid, grid=grid, n_layer=2, n_head=2, n_embd=16, cond=cond, sketch_patch=2
    )
    return LATransformer(cfg).double()


@pytest.mark.parametrize("seed", range(3))
def test_predictions_never_see_later_masked_tokens(seed):
    """d logits(z_{u_j}) / d content(z_{u_l}) is exactly 0 for l >= j, nonzero for known
    tokens. Each position holds a distinct token id, so the gradient on embedding row id
    is the dependence on that position's content."""
    torch.manual_seed(seed)
    model = _tiny()
    n = model.config.n_tokens
    tokens = torch.randperm(n)[None]
    known = random_known(n, 0.5, seed)[None]
    known[0, 0], known[0, -1] = True, False
    logits, order, n_known = model(tokens, known)
    nk = int(n_known[0])
    masked = order[0, nk:]
    for j in range(len(masked)):
        model.zero_grad()
        logits[0, nk + j].sum().backward(retain_graph=True)
        grad = model.tok_emb.weight.grad[:n].abs().sum(1)  # per token id
        for k, pos in enumerate(masked.tolist()):
            dep = grad[tokens[0, pos]]
            if k >= j:
                assert dep == 0, f"prediction {j} depends on masked token {k}"
        assert (grad[tokens[0, known[0]]] > 0).all()


def test_condition_tokens_never_see_image_tokens():
    torch.manual_seed(0)
    model = _tiny(cond="pose")
    n = model.config.n_tokens
    tokens = torch.randperm(n)[None]
    known = random_known(n, 0.5, 0)[None]
    kp = torch.rand(1, 18, 3, dtype=torch.float64)
    order, n_known = permutation(known)
    cond_tokens = model.encode_condition(kp, 1)
    x = model.embed_sequence(tokens, order, n_known, cond_tokens).detach().requires_grad_(True)
    hidden = model.run(x, permuted_mask(n_known, 18, x.shape[1]))
    hidden[:, :18].sum().backward()
    assert x.grad[:, 18:].abs().max() == 0
    assert x.grad[:, :18].abs().max() > 0


def test_taming_sequences_are_plain_causal():
    """With no known tokens the same network is a raster AR model: logits for z_i depend
    on z_<i only."""
    torch.manual_seed(1)
    model = _tiny()
    n = model.config.n_tokens
    tokens = torch.randperm(n)[None]
    known = torch.zeros(1, n, dtype=torch.bool)
    logits, order, _ = model(tokens, known)
    assert torch.equal(order[0], torch.arange(n))
    i = 7
    model.zero_grad()
    logits[0, i].sum().backward()
    grad = model.tok_emb.weight.grad[:n].abs().sum(1)
    assert (grad[tokens[0, i:]] == 0).all()
    assert (grad[tokens[0, :i]] > 0).all()


def test_loss_only_on_masked_tokens():
    torch.manual_seed(2)
    model = _tiny()
    n = model.config.n_tokens
    tokens = torch.randint(0, n, (2, n))
    known = torch.stack([random_known(n, 0.5, 3), random_known(n, 0.3, 4)])
    logits, order, n_known = model(tokens, known)
    loss = masked_token_loss(logits, tokens, order, n_known)
    # on fixed logits: the targets of known tokens do not enter the loss, masked ones do
    other = torch.where(known, (tokens + 1) % n, tokens)
    assert torch.equal(masked_token_loss(logits, other, order, n_known), loss)
    changed = torch.where(known, tokens, (tokens + 1) % n)
    assert masked_token_loss(logits, changed, order, n_known) != loss
    loss.backward()  # trains end to end


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="cond"):
        TransformerConfig(cond="depth")
    model = _tiny()
    with pytest.raises(ValueError, match="tokens per image"):
        model(torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool))


def test_pose_fourier_features():
    from napari_ilat.engine.conditions import PoseEncoder

    enc = PoseEncoder(16, 18, n_freqs=3)
    kp = torch.rand(2, 18, 3)
    kp[..., 2] = 1.0
    kp[1, 4] = torch.tensor([-1.0, -1.0, 0.0])  # invisible
    f = enc.features(kp)
    assert f.shape == (2, 18, 3 + 4 * 3)
    assert torch.equal(f[..., :3], kp)
    x, y = kp[0, 0, 0], kp[0, 0, 1]
    k = torch.pi * torch.tensor([1.0, 2.0, 4.0])
    expect = torch.cat([torch.sin(x * k), torch.cos(x * k), torch.sin(y * k), torch.cos(y * k)])
    # layout after the raw (x, y, v): [sin(x f), cos(x f), sin(y f), cos(y f)]
    assert torch.allclose(f[0, 0, 3:], expect, atol=1e-6)
    assert f[1, 4, 3:].abs().max() == 0  # invisible keypoints carry no position
    # a moved keypoint changes its own token only
    kp2 = kp.clone()
    kp2[0, 7, :2] += 0.03
    diff = (enc(kp2) - enc(kp)).abs().amax(-1)[0]
    assert diff[7] > 0 and diff[torch.arange(18) != 7].max() == 0
    assert PoseEncoder(16, 18).features(kp) is kp  # n_freqs=0: the reference (x, y, v) input


def test_pose_freqs_config_round_trip(tmp_path):
    from napari_ilat.engine.model import ILATModel, load_model, save_model

    cfg = TransformerConfig(cond="pose", pose_freqs=6)
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["pose_freqs"]  # configs written before the option existed
    assert TransformerConfig.from_dict(old).pose_freqs == 0
    with pytest.raises(ValueError, match="pose_freqs"):
        TransformerConfig(pose_freqs=-1)
    model = ILATModel.tiny(cond="pose", pose_freqs=4)
    assert model.transformer.cond_enc.mlp[0].in_features == 3 + 16
    path = save_model(model, tmp_path / "four")
    loaded = load_model(path)
    assert loaded.config.transformer.pose_freqs == 4
    kp = torch.rand(1, 18, 3)
    assert torch.equal(loaded.transformer.encode_condition(kp, 1), model.transformer.encode_condition(kp, 1))
