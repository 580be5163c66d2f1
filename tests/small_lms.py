"""Small Llama-shaped LMs for the GGUF export and llama.cpp backend tests: reduced configs (64 wide, 2-5 blocks)
with weights scaled up from the init, so that greedy tokens are decided by clear margins, not by ties that float
rounding could flip."""

import torch

import zoo

SMALL = dict(
    vocab_size=96,
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
)

PROMPTS = torch.tensor([[3, 5, 7, 9, 11, 13], [1, 2, 3, 4, 5, 6]])


def small_lm(name: str, **overrides) -> torch.nn.Module:
    """``name`` at SMALL (plus overrides), in eval mode, its weights spread out (from torch's current seed)."""
    model = zoo.create_model(name, **{**SMALL, **overrides}).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "lora_B" in key:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2:
                p.mul_(5)
            else:  # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def seeded_small_lm(name: str = "mobilellm_125m", **overrides) -> torch.nn.Module:
    """:func:`small_lm` built from seed 0: the same model wherever it is called."""
    torch.manual_seed(0)
    return small_lm(name, **overrides)
