"""``zoo run``: build a model and run it on a seeded synthetic input.

A vision model classifies a batch of random images; a language model continues a random prompt (``--chat``: replies
to a message in its tokenizer's chat template), on torch or, with ``--backend llama.cpp``, on a GGUF of its weights;
a folder ``zoo export`` wrote runs by its own runtime. ``add_arguments(parser)`` declares the options and
``run(args)`` does the work; ``zoo/cli.py`` mounts the pair.
"""

import argparse
import time
from pathlib import Path

import torch

from .data.lm_tokenizer import apply_chat_template, load_lm_tokenizer
from .data.text import special_token_ids
from .export import llama_backend
from .export.run_exported import is_export_folder, run_export_folder
from .factory import create_model
from .layers.args import int_between
from .lm.decoder import DecoderLM, TextStreamer
from .lm.quant import quant_names, quantize_argument
from .registry import list_models

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo run``'s arguments."""
    p.add_argument("model", help="registered name, hf-hub:ORG/NAME, a model folder, or a folder zoo export wrote")
    p.add_argument("--batch-size", type=int_between(1, 4096), default=1)
    p.add_argument(
        "--img-size", type=int_between(1, 4096), default=None, help="vision models: image size (default: the model's)"
    )
    p.add_argument("--weights", default=None, help="checkpoint file or folder to load (any supported origin)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init and the synthetic input (default 0)")
    p.add_argument("--prompt-tokens", type=int, default=8, help="language models: random prompt length (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="language models: tokens to generate (default 8)")
    p.add_argument(
        "--chat",
        default=None,
        metavar="MESSAGE",
        help="language models: reply to MESSAGE in the chat template of the tokenizer folder (tokenizer_config.json "
        "or chat_template.jinja beside the weights), streamed",
    )
    p.add_argument(
        "--backend",
        choices=["torch", llama_backend.NAME],
        default="torch",
        help="language models: where the forward passes run (llama.cpp: a GGUF of the weights, written once into "
        "$ZOO_CACHE/gguf, default ~/.cache/zoo/gguf)",
    )
    p.add_argument(
        "--quantize",
        type=quantize_argument("gguf"),
        default=None,
        help=f"--backend llama.cpp: the GGUF's weight type, {', '.join(quant_names('gguf'))} (default "
        f"{llama_backend.DEFAULT_QUANTIZE}; also spelled gguf:NAME)",
    )


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("" if n == 1 else "s")


def run(args: argparse.Namespace) -> int:
    """Build a model (random weights unless --weights) and run it on a synthetic input seeded by --seed: a
    vision model classifies a batch of images, a language model continues a random prompt. A folder ``zoo export``
    wrote runs by its own runtime (pte, gguf, pt2, onnx)."""
    if is_export_folder(args.model):
        if args.weights or args.backend != "torch" or args.quantize is not None or args.chat is not None:
            raise ValueError(
                f"{args.model} is an export folder, run by its own runtime: --weights, --backend, --quantize and "
                "--chat are for models (export the weights again to change them)"
            )
        for line in run_export_folder(
            args.model,
            seed=args.seed,
            prompt_tokens=args.prompt_tokens,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        ):
            print(line)
        return 0
    chat = _chat_prompt(args) if args.chat is not None else None  # refused before the model is built, not after
    torch.manual_seed(args.seed)  # the random init too: two runs with one seed print the same
    overlay = {"file": args.weights} if args.weights else None
    model = create_model(args.model, pretrained=bool(args.weights), pretrained_cfg_overlay=overlay).eval()
    params = sum(p.numel() for p in model.parameters())
    weights = args.weights or ("random init" if args.model in list_models() else f"from {args.model}")
    print(f"{args.model}: {params:,} params, weights: {weights}, seed {args.seed}")
    if isinstance(model, DecoderLM):
        return _chat(model, args, *chat) if chat is not None else _run_language_model(model, args)
    if args.backend != "torch" or args.quantize is not None or chat is not None:
        raise ValueError("--backend, --quantize and --chat are for the language models (llama.cpp runs LMs only)")
    cfg = model.pretrained_cfg
    size = args.img_size or cfg["input_size"][-1]
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch_size, cfg["input_size"][0], size, size, generator=generator)
    x = (x - torch.tensor(cfg["mean"]).view(1, -1, 1, 1)) / torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.inference_mode():
        model(x)  # warm-up
        start = time.perf_counter()
        logits = model(x)
        elapsed = time.perf_counter() - start
    print(
        f"input {tuple(x.shape)} -> logits {tuple(logits.shape)} in {elapsed * 1e3:.1f} ms "
        f"({args.batch_size / elapsed:.1f} img/s, {_threads()})"
    )
    top = logits.softmax(-1)[0].topk(5)
    print(
        "top-5 classes of image 0:",
        ", ".join(f"{i}:{p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist())),
    )
    return 0


def _run_language_model(model: DecoderLM, args) -> int:
    """Greedy continuation of a random prompt of ``--prompt-tokens`` ids; decoded when a tokenizer is found
    (``--chat``: :func:`_chat`)."""
    tokenizer = _find_tokenizer(args)
    vocab = model.config.vocab_size
    if tokenizer is not None:
        vocab = min(vocab, tokenizer.get_vocab_size())
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, vocab, (args.batch_size, args.prompt_tokens), generator=generator)
    engine = _prepare_backend(model, args, args.prompt_tokens + args.max_new_tokens)
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=args.max_new_tokens, backend=args.backend, quantize=args.quantize)
    elapsed = time.perf_counter() - start
    new = out[:, prompt.shape[1] :]
    print(
        f"random prompt {tuple(prompt.shape)} -> {new.shape[1]} new tokens per sequence in {elapsed * 1e3:.1f} ms "
        f"(greedy, {engine}, {_threads()})"
    )
    print("prompt ids of sequence 0:   ", prompt[0].tolist())
    print("generated ids of sequence 0:", new[0].tolist())
    if tokenizer is None:
        print("no tokenizer beside the weights: ids only")
    else:
        print("prompt text:   ", repr(tokenizer.decode(prompt[0].tolist())))
        print("generated text:", repr(tokenizer.decode(new[0].tolist())))
    return 0


def _chat_prompt(args) -> tuple[Path, torch.Tensor]:
    """``--chat``'s tokenizer folder and the message in its chat template, read before anything is built: a
    missing tokenizer or template is refused at once."""
    folder = _tokenizer_folder(args)
    if folder is None:
        raise ValueError(
            "--chat needs the model's tokenizer: a folder (--weights or the model folder) with tokenizer.json or "
            "tokenizer.model and its chat template"
        )
    return folder, torch.tensor([apply_chat_template(folder, [{"role": "user", "content": args.chat}])])


def _chat(model: DecoderLM, args, folder: Path, prompt: torch.Tensor) -> int:
    """``zoo run --chat MESSAGE``: the message in the tokenizer folder's chat template, the reply streamed as it is
    generated (greedy; it ends at the model's or the tokenizer's EOS, or after --max-new-tokens)."""
    tokenizer = load_lm_tokenizer(folder)
    vocab = model.config.vocab_size
    stops = {model.config.eos_token_id, special_token_ids(tokenizer)["eos_token_id"]}
    stops = sorted(i for i in stops if isinstance(i, int) and 0 <= i < vocab)
    print(f"chat template of {folder}: {prompt.shape[1]} prompt tokens")
    engine = _prepare_backend(model, args, prompt.shape[1] + args.max_new_tokens)
    print("reply: ", end="", flush=True)
    start = time.perf_counter()
    out = model.generate(
        prompt,
        max_new_tokens=args.max_new_tokens,
        stop_token_ids=stops,
        streamer=TextStreamer(tokenizer, skip_prompt=True),
        backend=args.backend,
        quantize=args.quantize,
    )
    elapsed = time.perf_counter() - start
    print(f"{out.shape[1] - prompt.shape[1]} new tokens in {elapsed * 1e3:.1f} ms ({engine}, {_threads()})")
    return 0


def _prepare_backend(model: DecoderLM, args, length: int) -> str:
    """``--backend llama.cpp``: the GGUF written (or found in the cache) and loaded before the timed generation,
    said with the time it took; the engine's name for the timing line."""
    if args.backend == "torch":
        if args.quantize is not None:
            raise ValueError("--quantize picks the GGUF type of --backend llama.cpp; add --backend llama.cpp")
        return "torch"
    start = time.perf_counter()
    session = llama_backend.open_session(model, args.quantize, length)
    print(f"llama.cpp: {session.path} ({session.quantize}) ready in {time.perf_counter() - start:.1f} s")
    return f"llama.cpp {session.quantize}"


def _find_tokenizer(args):
    """The tokenizer in the model's folder (see :func:`_tokenizer_folder`), or None."""
    folder = _tokenizer_folder(args)
    return load_lm_tokenizer(folder) if folder is not None else None


def _tokenizer_folder(args) -> Path | None:
    """The folder holding the model's tokenizer (the --weights folder or file's folder, or a model folder given as
    the name, a training run's export/ included), or None."""
    places = []
    if args.weights:
        weights = Path(args.weights)
        places.append(weights if weights.is_dir() else weights.parent)
    name = str(args.model).removeprefix("local-dir:")
    if not name.startswith("hf-hub:") and Path(name).is_dir():
        places += [Path(name), Path(name) / "export"]
    for folder in places:
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
            return folder
    return None
