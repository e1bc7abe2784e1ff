"""Cached sampler vs the recompute-everything reference; options, seeds, progress, cancel."""

import threading

import pytest
import torch

from napari_ilat.engine.sampler import EditCancelled, SamplingOptions, pick, sample_tokens
from napari_ilat.engine.transformer import LATransformer, TransformerConfig


def make(cond="none", dtype=torch.float32, seed=0, cond_map=False):
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        vocab_size=64, grid=6, n_layer=3, n_head=4, n_embd=32, cond=cond, sketch_patch=4, cond_map=cond_map
    )
    return LATransformer(cfg).to(dtype).eval()


def cond_for(model, dtype):
    g = torch.Generator().manual_seed(5)
    if model.config.cond == "pose":
        return torch.rand(1, 18, 3, generator=g, dtype=dtype)
    if model.config.cond == "sketch":
        return torch.rand(1, 1, 24, 24, generator=g, dtype=dtype)
    return None


def problem(n, rate=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (n,), generator=g)
    known = torch.rand(n, generator=g) > rate
    known[3] = False
    return tokens, known


@pytest.mark.parametrize("mode", ["ilat", "taming"])
@pytest.mark.parametrize("cond", ["none", "pose", "sketch", "pose+map", "sketch+map"])
def test_cached_equals_reference(mode, cond):
    model = make(cond.split("+")[0], cond_map=cond.endswith("+map"))
    tokens, known = problem(model.config.n_tokens)
    c = cond_for(model, torch.float32)
    opts = SamplingOptions(greedy=True)
    fast, lf = sample_tokens(model, tokens, known, c, mode=mode, samples=2, options=opts, return_logits=True)
    ref, lr = sample_tokens(
        model, tokens, known, c, mode=mode, samples=2, options=opts, cache=False, return_logits=True
    )
    assert torch.equal(fast, ref)
    assert lf.shape == lr.shape and lf.shape[1] > 0
    assert (lf - lr).abs().max() < 1e-5
    if c is not None:  # the condition reaches the logits
        _, lc = sample_tokens(model, tokens, known, c.flip(-1) + 0.5, mode=mode, options=opts, return_logits=True)
        assert (lc[0] - lf[0]).abs().max() > 1e-6
    if mode == "ilat":
        assert torch.equal(fast[:, known], tokens[known].expand(2, -1))
        assert lf.shape[1] == int((~known).sum())
    else:
        first = int((~known).nonzero()[0])
        assert lf.shape[1] == model.config.n_tokens - first
        assert torch.equal(fast[:, :first], tokens[:first].expand(2, -1))


def test_cached_equals_reference_when_sampling_with_the_same_seed():
    model = make("pose", torch.float64)
    tokens, known = problem(model.config.n_tokens, 0.6, seed=2)
    c = cond_for(model, torch.float64)
    runs = [
        sample_tokens(
            model,
            tokens,
            known,
            c,
            samples=3,
            cache=cache,
            options=SamplingOptions(temperature=1.3, top_k=20, top_p=0.9),
            generator=torch.Generator().manual_seed(11),
        )
        for cache in (True, False)
    ]
    assert torch.equal(*runs)


def test_seeds():
    model = make()
    tokens, known = problem(model.config.n_tokens, 0.7)

    def run(seed):
        return sample_tokens(model, tokens, known, samples=4, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(r.tolist()) for r in a}) == 4  # candidates differ from each other


def test_pick_options():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g)
    greedy = pick(logits, SamplingOptions(greedy=True), None)
    assert torch.equal(greedy, logits.argmax(-1))
    assert torch.equal(pick(logits, SamplingOptions(top_k=1), g), greedy)
    assert torch.equal(pick(logits, SamplingOptions(top_p=1e-6), g), greedy)
    top5 = logits.topk(5, -1).indices
    s = pick(logits, SamplingOptions(top_k=5, temperature=5.0), g)
    assert (top5 == s[:, None]).any(1).all()
    for bad in (dict(temperature=0), dict(top_k=0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingOptions(**bad)


@pytest.mark.parametrize("cache", [True, False])
def test_progress_and_cancel_within_one_step(cache):
    model = make()
    tokens, known = problem(model.config.n_tokens, 0.6)
    total = int((~known).sum())
    calls = []
    sample_tokens(model, tokens, known, cache=cache, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i + 1, total) for i in range(total)]

    stop = threading.Event()
    seen = []

    def progress(done, _total):
        seen.append(done)
        if done == 3:
            stop.set()

    with pytest.raises(EditCancelled):
        sample_tokens(model, tokens, known, cache=cache, progress=progress, cancel=stop)
    assert seen == [1, 2, 3]  # no step ran after the signal
    with pytest.raises(EditCancelled):
        sample_tokens(model, tokens, known, cancel=lambda: True)


def test_bad_mode():
    model = make()
    tokens, known = problem(model.config.n_tokens)
    with pytest.raises(ValueError, match="mode"):
        sample_tokens(model, tokens, known, mode="diffusion")


@pytest.mark.parametrize("mode", ["ilat", "taming"])
@pytest.mark.parametrize("cond", ["pose", "sketch+map"])
def test_guidance_mixes_the_conditional_and_unconditional_branches(mode, cond):
    """Classifier-free guidance: scale 0 samples the unconditional model (the condition
    dropped: no condition tokens, no cells), scale 1 the conditional one as trained, other
    scales something else; the cached sampler and the reference agree at every scale."""
    model = make(cond.split("+")[0], torch.float64, seed=3, cond_map=cond.endswith("+map"))
    tokens, known = problem(model.config.n_tokens, 0.6, seed=4)
    c = cond_for(model, torch.float64)

    def run(cond_, guidance, cache=True, greedy=True):
        opts = SamplingOptions(greedy=greedy, guidance=guidance, top_k=None if greedy else 8)
        gen = torch.Generator().manual_seed(3)
        return sample_tokens(model, tokens, known, cond_, mode=mode, options=opts, cache=cache, generator=gen)

    assert torch.equal(run(c, 0.0), run(None, 1.0))
    assert torch.equal(run(c, 1.0), run(c, 1.0, cache=False))
    assert not torch.equal(run(c, 1.0), run(None, 1.0))  # the condition matters to this model
    strong = run(c, 4.0)
    assert not torch.equal(strong, run(c, 1.0))
    assert torch.equal(strong, run(c, 4.0, cache=False))
    assert torch.equal(run(c, 2.5, greedy=False), run(c, 2.5, cache=False, greedy=False))
    # the guided logits are the mix of the two branches' log-probabilities
    opts = dict(options=SamplingOptions(greedy=True, guidance=2.5), mode=mode, return_logits=True)
    out, lg = sample_tokens(model, tokens, known, c, **opts)
    # the first step's context is the input alone, the same for every run: compare there
    _, lc = sample_tokens(model, tokens, known, c, options=SamplingOptions(greedy=True), mode=mode, return_logits=True)
    _, lu = sample_tokens(
        model, tokens, known, None, options=SamplingOptions(greedy=True), mode=mode, return_logits=True
    )
    lcf, luf = lc[0, 0].log_softmax(-1), lu[0, 0].log_softmax(-1)
    assert torch.allclose(lg[0, 0], luf + 2.5 * (lcf - luf), atol=1e-9)
    assert not torch.equal(lg[0, 0], lc[0, 0])


def test_guidance_without_a_condition_or_unconditional_mode():
    model = make("none")
    tokens, known = problem(model.config.n_tokens)
    plain = sample_tokens(model, tokens, known, options=SamplingOptions(greedy=True))
    assert torch.equal(plain, sample_tokens(model, tokens, known, options=SamplingOptions(greedy=True, guidance=3)))
    with pytest.raises(ValueError, match="guidance"):
        SamplingOptions(guidance=-1)
    with pytest.raises(ValueError, match="guidance"):
        SamplingOptions(guidance=float("nan"))
