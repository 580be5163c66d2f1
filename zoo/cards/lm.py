"""The model card of a language model's row, and its line in the cards index."""

from typing import Any

from huggingface_hub import ModelCardData

from .rows import _family_title
from .text import _card_description, _card_text, _cell, _weights


def _lm_summary(row: dict[str, Any]) -> str:
    """One line of the cards index: params, layers, context, weights."""
    arch = row["arch"]
    text = f"{row['params']:,} params, {arch['num_hidden_layers']} layers, hidden {arch['hidden_size']}"
    if row.get("context_length"):
        text += f", context {row['context_length']:,}"
    return text + (", weights on the Hub" if row.get("hf_hub_id") else ", no published weights")


def _lm_layers(arch: dict[str, Any]) -> str:
    layers = str(arch["num_hidden_layers"])
    if arch.get("layer_sharing"):
        layers += " (each run twice in a row: 2 x the layers' compute, one set of weights)"
    if arch.get("num_recursion"):
        layers += f" (shared: {arch['num_recursion']} recursions, `{arch['sharing']}` sharing)"
    return layers


def _lm_attention(arch: dict[str, Any]) -> str:
    heads = (
        f"{arch['num_attention_heads']} query heads, {arch['num_key_value_heads']} key/value heads, "
        f"head dim {arch['head_dim']}"
    )
    if arch.get("sliding_window") and arch.get("global_layers") is not None:
        local = arch["num_hidden_layers"] - arch["global_layers"]
        heads += f"; {local} sliding-window layers (window {arch['sliding_window']:,}), {arch['global_layers']} global"
    elif arch.get("sliding_window"):
        heads += f"; sliding window {arch['sliding_window']:,}"
    return heads


def _lm_routing(arch: dict[str, Any]) -> str | None:
    if not arch.get("num_recursion"):
        return None
    parts = [f"Mixture-of-Recursions, {arch['mor']}-choice routing" if arch.get("mor") else "no routing"]
    if arch.get("kv_sharing"):
        parts.append("recursive KV sharing")
    if arch.get("lora_rank"):
        parts.append(f"per-loop LoRA, rank {arch['lora_rank']}")
    return ", ".join(parts)


def _lm_card_data(row: dict[str, Any]) -> ModelCardData:
    return ModelCardData(
        model_name=row["name"],
        license=row.get("license"),
        license_name=row.get("license_name"),
        library_name="zoo",
        pipeline_tag="text-generation",
        tags=["text-generation", "zoo", row["family"]],
    )


def _lm_details(row: dict[str, Any], family: str) -> list[str]:
    arch = row["arch"]
    details = [
        ("Family", family),
        ("Task", "text generation (decoder-only LM)"),
        ("Params (measured)", f"{row['params']:,}"),
        ("Params (reference)", "-" if row.get("ref_params") is None else f"{row['ref_params']:,}"),
    ]
    if row.get("non_embedding_params") is not None:
        details.append(("Params without the embedding", f"{row['non_embedding_params']:,}"))
    details += [
        ("Layers", _lm_layers(arch)),
        ("Hidden size / MLP width", f"{arch['hidden_size']:,} / {arch['intermediate_size']:,}"),
        ("Attention", _lm_attention(arch)),
    ]
    routing = _lm_routing(arch)
    if routing:
        details.append(("Recursion", routing))
    details += [
        (
            "Vocabulary",
            f"{arch['vocab_size']:,}" + (" (input and output embedding tied)" if arch["tie_word_embeddings"] else ""),
        ),
        ("Context length", "-" if row.get("context_length") is None else f"{row['context_length']:,}"),
        ("Tokenizer", row.get("tokenizer") or "-"),
        ("KV cache per token (fp32)", f"{row['kv_cache_bytes_per_token']:,} bytes"),
    ]
    if row.get("commonsense_avg") is not None:
        details.append(("Zero-shot commonsense average (paper)", f"{float(row['commonsense_avg']):.1f}"))
    details.append(("Weights", _weights(row)))
    if row.get("weights_notes"):
        details.append(("Weights origin", "; ".join(row["weights_notes"])))
    license = row.get("license") or "-"
    if row.get("license_name"):
        license += f" ({row['license_name']})"
    details.append(("License", license))
    return ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in details]


def _lm_usage(row: dict[str, Any]) -> list[str]:
    name, arch = row["name"], row["arch"]
    # llama.cpp has no graph for MoR's routing or recursive KV sharing: those export to pt2 / pte only
    routed = bool(arch.get("mor") or arch.get("kv_sharing"))
    if row.get("hf_hub_id"):
        build = f'model = zoo.create_model("{name}", pretrained=True).eval()  # the authors\' weights from the Hub'
    else:
        build = f'model = zoo.create_model("{name}").eval()  # random init: no published weights; train with train.py'
    return [
        "```python",
        "import torch",
        "",
        "import zoo",
        "",
        build,
        "ids = torch.tensor([[1, 415, 2936, 9060]])  # token ids from the model's tokenizer",
        "out = model.generate(ids, max_new_tokens=32)  # greedy; do_sample=True, temperature=, top_p= to sample",
        "```",
        "",
        "The tokenizer of a folder or Hub repo loads with `zoo.data.lm_tokenizer.load_lm_tokenizer(folder)`; "
        f"`zoo run {name}` continues a seeded prompt; `zoo export {name} --format pte` deploys it to ExecuTorch"
        + ("." if routed else ", `--format gguf` to llama.cpp."),
    ]


def _lm_measured(row: dict[str, Any]) -> list[str]:
    name = row["name"]
    measured = [
        f'- **Params**: unique parameters of `zoo.create_model("{name}")` (the tied embedding counted once), '
        "counted on the meta device by `zoo.profile.count_params`.",
        "- **KV cache per token**: keys and values of every layer run, in float32 (`model.kv_cache_bytes_per_token()`).",
        f"- **MACs per token** (prefill and decode) are not in this card: `zoo profile {name}` counts them.",
    ]
    if row.get("ref_convention"):
        measured.append(f"- **Reference figures**: {row['ref_convention']}.")
    measured.append(
        "- Tool versions, dates and machine details are not embedded, so the same code gives a "
        "byte-identical card: regenerate with `python tools/cards.py`; `python tools/cards.py --check` "
        "(and `tests/profile/test_cards.py`) fails when this card no longer matches the code."
    )
    return measured


def render_lm_card(row: dict[str, Any]) -> str:
    """The Hugging Face model card of a language model's row of :func:`collect`."""
    name, family = row["name"], _family_title(row["family"])
    return _card_text(
        _lm_card_data(row), name, _card_description(row, "text-generation", family), _lm_details(row, family),
        _lm_usage(row), _lm_measured(row),
    )  # fmt: skip
