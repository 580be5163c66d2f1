"""SReT: parity with a plain rendition of the authors' forward, aliases, permutations, recursion depth."""

import pytest
import torch
from model_checks import assert_close_to_scale

import zoo
from zoo.bench.reference.sret import make_authors_state_dict, reference_forward
from zoo.layers import RecursiveStack, cycle_schedule, recursion_indices, sequence_schedule


def _input(size=224, batch=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _load(name, sd, tmp_path, **kwargs):
    path = tmp_path / f"{name}.pth"
    torch.save({"model": sd}, path)  # the authors' files are {"model": state_dict}
    return zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs).eval()


# the largest variant (sret_small, 2-3 s) with -m slow, beside the others
@pytest.mark.parametrize(
    "name", ["sret_tiny", "sret_lt", pytest.param("sret_small", marks=pytest.mark.slow), "sret_tiny_wo_slice"]
)
def test_matches_authors_forward(name, tmp_path):
    sd = make_authors_state_dict(name, seed=3)
    model = _load(name, sd, tmp_path)
    x = _input()
    with torch.no_grad():
        torch.manual_seed(0)  # the authors draw their token permutations from the global RNG
        ref_logits, ref_feats = reference_forward(name, sd, x, return_features=True)
        logits = model(x)  # permutation_seed 0 reproduces them
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert_close_to_scale(logits, ref_logits, f"{name} logits")
    for i, (f, r) in enumerate(zip(feats, ref_feats)):
        assert_close_to_scale(f, r, f"{name} stage {i}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["sret_small_wo_slice_384", "sret_lt_wo_slice", "sret_small_wo_slice", "sret_tiny_distill"]
)
def test_matches_authors_forward_other_variants(name, tmp_path):
    sd = make_authors_state_dict(name, seed=4)
    model = _load(name, sd, tmp_path)
    size = model.pretrained_cfg["input_size"][-1]
    x = _input(size, batch=1)
    with torch.no_grad():
        torch.manual_seed(0)
        ref = reference_forward(name, sd, x)
        assert_close_to_scale(model(x), ref, f"{name} logits")


def test_gradients_match_reference(tmp_path):
    """Autograd through the zoo's fused paths equals autograd through the reference (float64 reference)."""
    name = "sret_tiny"
    sd = make_authors_state_dict(name, seed=5, duplicate_aliases=False)
    model = _load(name, sd, tmp_path)
    ref_sd = {k: v.double().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    x = _input(batch=1)
    x_ref, x_zoo = x.double().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    (reference_forward(name, ref_sd, x_ref) * w.double()).sum().backward()
    (model(x_zoo) * w).sum().backward()
    assert_close_to_scale(x_zoo.grad.double(), x_ref.grad, "input gradient", rel=1e-4)
    ours = dict(model.named_parameters())
    key = "transformers.0.blocks.0.attn.qkv.weight"
    assert_close_to_scale(
        ours["stages.0.stack.blocks.0.attn.qkv.weight"].grad.double(),
        ref_sd[key].grad,
        "shared qkv weight gradient (sum over both applications)",
        rel=1e-3,
    )


def test_shared_weights_are_stored_once_and_either_alias_loads(tmp_path):
    name = "sret_tiny"
    both = make_authors_state_dict(name, seed=6)
    first = make_authors_state_dict(name, seed=6, duplicate_aliases=False)
    assert len(both) > len(first)
    m_both, m_first = _load(name, both, tmp_path), _load(name, first, tmp_path)
    for (k, a), (_, b) in zip(m_both.state_dict().items(), m_first.state_dict().items()):
        assert torch.equal(a, b), k
    sd_zoo = m_both.state_dict()
    assert len(sd_zoo) < len(both) and len({t.data_ptr() for t in sd_zoo.values()}) == len(sd_zoo)  # one copy each
    assert sum(p.numel() for p in m_both.parameters()) == 4_755_979


def test_differing_aliases_take_the_later_one(tmp_path):
    name = "sret_tiny"
    sd = make_authors_state_dict(name, seed=7)
    sd["transformers.0.blocks.2.norm1.weight"] = sd["transformers.0.blocks.0.norm1.weight"] + 1.0
    model = _load(name, sd, tmp_path)
    assert torch.equal(model.stages[0].stack.blocks[0].norm1.weight, sd["transformers.0.blocks.2.norm1.weight"])


def test_permutations_seeded_random_identity():
    x = _input(batch=1)
    model = zoo.create_model("sret_tiny").eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)  # eval is deterministic: permutations come from a per-forward seeded generator
        model.permutation_seed = 1
        assert not torch.allclose(model(x), a)
        model.token_permutation = "identity"
        c = model(x)
        assert torch.equal(c, model(x)) and not torch.allclose(c, a)
        model.token_permutation = "random"  # the authors' behaviour: the global RNG, also in eval
        torch.manual_seed(0)
        r1 = model(x)
        torch.manual_seed(0)
        assert torch.equal(r1, model(x))
        assert not torch.allclose(r1, model(x))
    model.token_permutation = "seeded"
    model.train()
    torch.manual_seed(3)
    t1 = model(x)
    assert not torch.allclose(t1, model(x))  # training draws fresh permutations


def test_seeded_permutations_are_buffers_drawn_at_build():
    """The eval permutations are drawn when the model is built (again when the seed is set), exactly as the seeded
    generator gives them in forward order; non-persistent buffers, so state dicts are unchanged."""
    model = zoo.create_model("sret_tiny", img_size=64, recursive_num=(2, 1, 1)).eval()
    assert not any("permutations" in k for k in model.state_dict())
    generator = torch.Generator().manual_seed(0)
    blocks = model.stages[0].stack.blocks  # schedule [0, 0, 1, 1]: one re-application of each, 8x8 tokens
    drawn = [torch.randperm(64, generator=generator) for _ in blocks]
    assert all(torch.equal(b.attn.permutations, p[None]) for b, p in zip(blocks, drawn))
    assert all(b.attn.permutations.numel() == 0 for s in model.stages[1:] for b in s.stack.blocks)  # groups2 = 1
    x = _input(64, batch=1)
    with torch.no_grad():
        a = model(x)
        model.permutation_seed = 3
        assert not torch.equal(blocks[0].attn.permutations[0], drawn[0]) and not torch.allclose(model(x), a)
        model.permutation_seed = 0
        assert torch.equal(model(x), a)
        # a position table of another size after the build: eager draws at run time, tracing asks for a redraw
        model.pos_embed = torch.nn.Parameter(torch.zeros(1, 64, 16, 16))
        x = _input(128, batch=1)
        runtime = model(x)
        with pytest.raises(RuntimeError, match="draw_permutations"):
            torch.export.export(model, (x,))
        model.draw_permutations()
        assert blocks[0].attn.permutations.shape == (1, 256) and torch.equal(model(x), runtime)


def test_plain_attention_has_no_permutation():
    model = zoo.create_model("sret_tiny_wo_slice").eval()
    x = _input(batch=1)
    with torch.no_grad():
        a = model(x)
        model.permutation_seed = 5
        assert torch.equal(a, model(x))


@pytest.mark.parametrize("recursion", [1, *(pytest.param(r, marks=pytest.mark.slow) for r in (3, 4))])  # 3, 4: -m slow
def test_recursion_depth_is_a_config_change(recursion):
    base = zoo.create_model("sret_tiny")
    model = zoo.create_model("sret_tiny", recursion=recursion).eval()
    stack = model.stages[0].stack
    assert stack.schedule == sequence_schedule(2, recursion)
    assert len(stack.step_layers) == 2 * recursion
    nll_params = sum(p.numel() for s in model.stages for p in s.stack.step_layers[0].parameters()) // 1
    per_nll = [sum(p.numel() for p in s.stack.step_layers[0].parameters()) for s in model.stages]
    extra = sum(n * len(s.stack.blocks) * (recursion - 2) for n, s in zip(per_nll, model.stages))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in base.parameters()) + extra
    assert nll_params > 0
    with torch.no_grad():
        assert model(_input(batch=1)).shape == (1, 1000)
    macs = zoo.profile(model).macs
    assert (macs > zoo.profile(base).macs) == (recursion > 2)  # every application is counted


def test_bad_inputs():
    model = zoo.create_model("sret_tiny").eval()
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 256, 256))
    with pytest.raises(ValueError, match="not divisible"):
        zoo.create_model("sret_tiny", img_size=112)
    with pytest.raises(ValueError, match="token_permutation"):
        zoo.create_model("sret_tiny", token_permutation="shuffle")
    with pytest.raises(ValueError, match="recursion"):
        zoo.create_model("sret_tiny", recursion=0)


def test_recursive_stack_schedules():
    assert sequence_schedule(3, 2) == [0, 0, 1, 1, 2, 2]
    assert cycle_schedule(3, 2) == [0, 1, 2, 0, 1, 2]
    assert recursion_indices([0, 0, 1, 1]) == [0, 1, 0, 1]
    assert recursion_indices(cycle_schedule(2, 3)) == [0, 0, 1, 1, 2, 2]

    class Add(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, x, recursion=0):
            return x * 10 + self.v + recursion / 10

    stack = RecursiveStack([Add(1), Add(2)], cycle_schedule(2, 2))
    # blocks 0, 1, 0, 1 with recursion 0, 0, 1, 1: 1 -> 12 -> 121.1 -> 1213.1
    assert stack(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(1213.1)
    with pytest.raises(ValueError, match="every one"):
        RecursiveStack([Add(1), Add(2)], [0, 0])
    with pytest.raises(ValueError, match="step layers"):
        RecursiveStack([Add(1)], [0, 0], step_layers=[torch.nn.Identity()])


def test_all_10_sret_variants_are_registered():
    assert len(zoo.list_models(family="sret")) == 10
