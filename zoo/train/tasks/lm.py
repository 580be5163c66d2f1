"""Language modelling: text documents and streams, the run's tokenizer, next-token loss and perplexity."""

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ...data import text
from ...data.errors import DataError
from ...data.sources import TEXT_KINDS, DataSource, parse_split, resolve
from ...data.stream import SampleStream, TokenRows, stack_rows, stream_documents, stream_name, text_stream
from ...factory import create_model
from ...hub import download
from ...registry import UnknownModelError
from ..config import Recipe, RecipeError
from ..data_pruning import mean_weighted
from ..distributed import DistState, barrier
from ..metrics import lm_logits, lm_metrics, lm_sums, profile_lm
from .base import EvalSource, Task, warn_if_cut

_logger = logging.getLogger(__name__)


def local_tokenizer(source: str | None) -> Path | None:
    """``tokenizer.json`` of a local model folder or run folder (or its ``export/``); None elsewhere."""
    if not source or source.startswith("hf-hub:"):
        return None
    folder = Path(source[len("local-dir:") :] if source.startswith("local-dir:") else source)
    for cand in (folder / "tokenizer.json", folder / "export" / "tokenizer.json"):
        if cand.is_file():
            return cand
    return None


def _part(docs: list[str], part: slice | None) -> list[str]:
    """The documents a split's slice names (all for no slice); a slice that leaves none is refused."""
    if part is None:
        return docs
    kept = docs[part]
    if not kept:
        raise DataError(
            f"the slice [{part.start or ''}:{part.stop or ''}] leaves none of the split's {len(docs)} documents: "
            "widen it"
        )
    return kept


class _Rows(Dataset):
    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self):
        return self.rows.shape[0]

    def __getitem__(self, i):
        return self.rows[i]


def find_tokenizer(source: EvalSource):
    """The tokenizer of a model under evaluation: the one named, the run's, the one beside the weights, the one in
    the model's own folder (a saved folder, a run folder or its ``export/``), or the Hub repo's (``hf-hub:``
    names)."""
    cands = [source.tokenizer] if source.tokenizer else []
    if source.run_dir is not None:
        cands.append(str(source.run_dir / "tokenizer.json"))
    if source.weights:
        p = Path(source.weights)
        cands.append(str((p if p.is_dir() else p.parent) / "tokenizer.json"))
    beside = local_tokenizer(source.model_name)  # eval.py -m FOLDER: a model folder or a run folder (or its export/)
    if beside is not None:
        cands.append(str(beside))
    for c in cands:
        if Path(c).exists():
            return text.load_tokenizer(c), Path(c)
    if source.model_name.startswith("hf-hub:"):
        path = download(source.model_name[len("hf-hub:") :], "tokenizer.json")
        return text.load_tokenizer(path), Path(path)
    raise FileNotFoundError("no tokenizer found: pass --tokenizer PATH (tokenizer.json or a folder holding one)")


class LMTask(Task):
    name = "text-generation"
    throughput_unit = "tok/s"
    data_kinds = TEXT_KINDS
    tokenizer_docs = 10_000  # a stream's first documents train the tokenizer when the run brings none
    data_hint = "a language model; evaluate it on text (--data pydoc or a text path)"

    def __init__(self, recipe: Recipe, dstate: DistState, run_dir: Path):
        super().__init__(recipe, dstate, run_dir)
        self.seq_len = recipe.data.seq_len
        self.unigram_perplexity: float | None = None
        self.model_kwargs = dict(recipe.model_kwargs)
        self.inherited_from: str | None = None  # "init_from X" / "distill.teacher X": whose tokenizer the run took

    def _documents(self, src: DataSource) -> tuple[list[str], list[str]]:
        """(training, held-out) documents of ``src``: a datasets folder's own splits, else a fixed hash split."""
        d = self.recipe.data
        if src.stream:
            self.stream_source, self.text_key, head, held_out = text_stream(d, self.tokenizer_docs)
            return head, held_out
        (train_name, train_part), (val_name, val_part) = parse_split(d.train_split), parse_split(d.val_split)
        if src.kind == "hf_disk":
            try:
                return (
                    _part(text.load_text_documents("hf_disk", src.path, train_name, d.text_key), train_part),
                    _part(text.load_text_documents("hf_disk", src.path, val_name, d.text_key), val_part),
                )
            except ValueError:
                pass
        docs = text.load_text_documents(src.kind, src.path, train_name, d.text_key)
        train, held_out = text.split_documents(docs, d.val_fraction)
        # a slice (train[:200]) takes part of the split's documents, as it takes part of an image split
        return _part(train, train_part), _part(held_out, val_part)

    def _tokenizer_file(self, train_docs: list[str]) -> tuple[Path, bool]:
        """RUN_DIR/tokenizer.json: the recipe's tokenizer copied, or one trained on the training documents; and
        whether this process wrote it."""
        d = self.recipe.data
        tok_path = self.run_dir / "tokenizer.json"
        written = False  # a new file in the run folder
        if self.dstate.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            inherited = None if d.tokenizer else self._inherited_tokenizer()
            if d.tokenizer or inherited:
                src = Path(d.tokenizer or inherited)
                src = src / "tokenizer.json" if src.is_dir() else src
                if not src.is_file():
                    raise RecipeError(f"data.tokenizer {d.tokenizer} is neither tokenizer.json nor a folder with one")
                try:  # read before it is copied: the run folder never holds a tokenizer that does not load
                    text.load_tokenizer(src)
                except DataError as e:
                    what = "data.tokenizer" if d.tokenizer else f"the tokenizer of {self.inherited_from}"
                    raise DataError(f"{what}: {e}") from None
                if src.resolve() != tok_path.resolve():
                    written = not tok_path.is_file()
                    text.write_atomic(tok_path, src.read_bytes())
            elif not tok_path.is_file():  # a resumed run keeps the tokenizer it trained
                _logger.info("training a %d-token BPE tokenizer on %d documents", d.vocab_size, len(train_docs))
                text.train_bpe_tokenizer(train_docs, d.vocab_size, tok_path)
                written = True
        barrier(self.dstate)
        return tok_path, written

    def _inherited_tokenizer(self) -> Path | None:
        """The tokenizer a run without ``data.tokenizer`` takes from ``init_from`` (a folder, or an ``hf-hub:``
        repo), else from a teacher folder or repo (token ids must mean the same to both models); None where neither
        holds one."""
        r = self.recipe
        for what, source in (("init_from", r.init_from), ("distill.teacher", r.distill.teacher if r.distill else None)):
            found = local_tokenizer(source)
            if found is None and source and source.startswith("hf-hub:"):
                found = Path(download(source[len("hf-hub:") :], "tokenizer.json"))
            if found is not None:
                _logger.info("data.tokenizer unset: using %s, the tokenizer of %s %s", found, what, source)
                self.inherited_from = f"{what} {source}"
                return found
        return None

    def _check_context(self) -> None:
        """Sequences longer than the model's context are a recipe error, found before a tokenizer is trained (the
        architecture is built on the meta device: no memory, no time)."""
        if self.recipe.init_from:  # the folder's architecture
            args = self.init_from_args()
            context = self._init_config.get("max_position_embeddings", args.get("max_position_embeddings"))
            if context is not None and self.seq_len > context:
                raise RecipeError(
                    f"data.seq_len {self.seq_len} is longer than the context of init_from {self.recipe.init_from} "
                    f"({context} tokens); lower data.seq_len"
                )
            return
        kwargs = {"vocab_size": 256, **self.recipe.model_kwargs}
        try:
            with torch.device("meta"):
                config = getattr(create_model(self.recipe.model, **kwargs), "config", None)
        except (UnknownModelError, TypeError, ValueError):
            return  # not an architecture that can be built from these arguments: build_model says why
        context = getattr(config, "max_position_embeddings", None)
        if context is not None and self.seq_len > context:
            raise RecipeError(
                f"data.seq_len {self.seq_len} is longer than {self.recipe.model}'s context of {context} tokens; "
                "lower data.seq_len or raise model_kwargs.max_position_embeddings"
            )

    def prepare_data(self):
        d = self.recipe.data
        if d.name not in self.data_kinds:
            kinds = self.data_kinds
            raise RecipeError(f"data.name {d.name!r} is not a text dataset: use {', '.join(kinds[:-1])} or {kinds[-1]}")
        src = resolve(d.name, d.path)  # what the name means (zoo.data.sources)
        if src.stream and not d.train_samples:
            raise RecipeError(
                f"data.name {d.name} streams text of unknown length: set data.train_samples, the rows of "
                f"{d.seq_len} tokens an epoch reads"
            )
        self._check_context()
        train_docs, val_docs = self._documents(src)
        self.dataset_name = "pydoc_data.topics" if src.kind == "pydoc" else Path(src.path).name
        if getattr(self, "stream_source", None) is not None:
            self.dataset_name = stream_name(self.stream_source)
        self.tokenizer_file, written = self._tokenizer_file(train_docs)
        try:
            self._tokenize(train_docs, val_docs)
        except DataError:
            if written:  # too little text to train on: the run folder stays as it was
                self.tokenizer_file.unlink(missing_ok=True)
            raise

    def _tokenize(self, train_docs: list[str], val_docs: list[str]):
        d = self.recipe.data
        try:
            self.tokenizer = text.load_tokenizer(self.tokenizer_file)
        except DataError as e:  # the run's own copy, damaged since it was written (a resumed run reads it)
            raise DataError(
                f"{e}. It is this run's tokenizer: put back the run's copy (export/tokenizer.json, when the run "
                "exported), or start anew with --overwrite"
            ) from None
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.pad_id = text.special_token_ids(self.tokenizer).get("pad_token_id")
        train_ids = text.encode_documents(self.tokenizer, train_docs)
        val_ids = text.encode_documents(self.tokenizer, val_docs)
        if getattr(self, "stream_source", None) is not None:  # train_docs: the stream's first documents
            rows = TokenRows(self.tokenizer_file, self.text_key, d.seq_len)
            self.train_set = SampleStream(self.stream_source, rows, stack_rows, d.train_samples, self.recipe.seed,
                                          d.shuffle_buffer)  # fmt: skip
            n_train, n_train_tokens = d.train_samples, d.train_samples * d.seq_len
        else:
            self.train_set = _Rows(text.pack_tokens(train_ids, d.seq_len))
            n_train, n_train_tokens = len(self.train_set), int(train_ids.numel())
        self.val_set = _Rows(text.pack_tokens(val_ids, d.seq_len))
        self._require_one_batch(n_train, f"rows of {d.seq_len} tokens", " (or data.seq_len)")
        self.unigram_perplexity = text.unigram_perplexity(
            train_ids, self.val_set.rows[:, 1:].reshape(-1), self.vocab_size
        )
        self.token_counts = {
            "train_tokens": n_train_tokens,
            "val_tokens": int(self.val_set.rows[:, 1:].numel()),
        }

    def prepare_eval_data(self, model: nn.Module, source: EvalSource):
        """Rows of ``seq_len`` tokens; on the run's own data (or pydoc) the run's held-out (or training) part."""
        d = self.recipe.data
        self.seq_len = source.seq_len or d.seq_len
        src, stream = source.source(), source.stream()
        if stream is not None:
            docs = stream_documents(stream, source.text_key, source.max_samples)
            warn_if_cut(len(docs), source)
        elif src.kind == "hf_disk":
            docs = text.load_text_documents("hf_disk", src.path, source.split, source.text_key)
        else:
            docs = text.load_text_documents(src.kind, src.path)
            if source.run_dir is not None and (src.kind == "pydoc" or d.path == src.path):
                docs = text.split_documents(docs, d.val_fraction)[0 if source.split == "train" else 1]
        self.tokenizer, self.tokenizer_file = find_tokenizer(source)
        self.val_set = _Rows(text.pack_tokens(text.encode_documents(self.tokenizer, docs), self.seq_len))
        self.dataset_name = "pydoc_data.topics" if src.kind == "pydoc" else Path(src.path).name
        if stream is not None:
            self.dataset_name = stream_name(stream)
        self.split = source.split

    def build_model(self) -> nn.Module:
        kwargs = dict(self.recipe.model_kwargs)
        vs = kwargs.setdefault("vocab_size", self.vocab_size)
        if vs < self.vocab_size:
            raise RecipeError(f"model_kwargs.vocab_size {vs} is smaller than the tokenizer's {self.vocab_size}")
        for key, value in text.special_token_ids(self.tokenizer).items():  # the exported config declares them
            kwargs.setdefault(key, value)
        model = self._create_model(kwargs)
        self.model_kwargs = self.arch_kwargs
        return model

    @classmethod
    def complete_model_kwargs(cls, kwargs: dict[str, Any], run_dir: Path, weights: str | None) -> dict[str, Any]:
        """``vocab_size`` from the run's tokenizer."""
        kwargs = super().complete_model_kwargs(kwargs, run_dir, weights)
        tok = run_dir / "tokenizer.json"
        if "vocab_size" in kwargs or not tok.is_file():
            return kwargs
        return {**kwargs, "vocab_size": text.load_tokenizer(tok).get_vocab_size()}

    def build_mixup(self):
        return None

    def build_loss(self, mixup):
        return None

    def prepare_batch(self, batch, device, channels_last: bool):
        return batch.to(device, non_blocking=True)

    def model_inputs(self, batch) -> torch.Tensor:
        return batch[:, :-1]

    def forward_loss(self, model, batch, loss_fn=None, mixup=None, distill=None, index=None, weights=None):
        """(loss, target tokens); with a distiller, token-level distillation on every position that is not
        padding. With per-sample ``weights`` (data pruning; a sample is a row): (mean of weight x each row's mean
        token loss, target tokens, the rows' losses unweighted and detached)."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = lm_logits(model(inputs))
        if weights is not None:
            per_token = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            )
            losses = per_token.reshape(targets.shape).mean(dim=1)
            if distill is not None:
                pad = getattr(self, "pad_id", None)
                mask = targets != pad if pad is not None else None
                losses = distill.lm_loss(logits, inputs, losses, mask, index, reduction="none")
            return mean_weighted(losses, weights), targets.numel(), losses.detach()
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if distill is not None:
            pad = getattr(self, "pad_id", None)
            mask = targets != pad if pad is not None else None
            loss = distill.lm_loss(logits, inputs, loss, mask, index)
        return loss, targets.numel()

    def eval_sums(self, model, batches, amp_ctx, max_batches: int | None) -> torch.Tensor:
        return lm_sums(model, batches, amp_ctx, max_batches)

    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        metrics = lm_metrics(sums)
        if self.unigram_perplexity is not None:  # known when the task read the training text
            metrics["unigram_perplexity"] = self.unigram_perplexity
        return metrics

    def eval_description(self) -> dict[str, Any]:
        return {**super().eval_description(), "seq_len": self.seq_len}

    def export_kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs)

    def run_metrics(self) -> dict[str, Any]:
        return {**self.token_counts, "vocab_size": self.vocab_size}

    def extra_files(self) -> dict[str, str]:
        return {"tokenizer": str(self.tokenizer_file)}

    def profile(self, model: nn.Module) -> dict[str, Any]:
        return profile_lm(model, self.seq_len)
