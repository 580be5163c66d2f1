"""Model cards and the model table of the documentation, generated from the code.

One set of rows, built by :func:`collect` from ``zoo.model_info`` (family, paper, reference figures, pretrained
cfg) and ``zoo.profile`` (measured params and MACs), feeds both

* ``model_cards/<name>.md``: a Hugging Face model card per model (YAML front matter built with
  ``huggingface_hub.ModelCardData`` / ``EvalResult``, then a markdown body), plus the ``model_cards/README.md``
  index, and
* the model table of the documentation's models page (``docs/models/index.md``), between the lines ``<!-- model-table:start -->`` and
  ``<!-- model-table:end -->`` (everything outside the markers is left byte-for-byte as it is).

The output depends only on the code: no dates, tool versions or machine details are embedded, so the same code
gives byte-identical files and :func:`check` can tell when a committed card or table has drifted.

The zoo's checkout keeps its cards and table current with ``python tools/cards.py [--check]`` (a maintainer's tool,
not a ``zoo`` command: it knows the checkout's layout); :func:`write_all` and :func:`check` take the folder.

The package by job: :mod:`~zoo.cards.rows` (the rows, their order, the families' names), :mod:`~zoo.cards.text`
(the layout and formatting every card shares), :mod:`~zoo.cards.card` and :mod:`~zoo.cards.lm` (an image
classifier's card, a language model's), :mod:`~zoo.cards.table` (the table and the cards index),
:mod:`~zoo.cards.files` (writing and checking the files), :mod:`~zoo.cards.published` (the card of a published
model).
"""

from .card import render_card
from .files import check, render_all, write_all
from .lm import render_lm_card
from .published import _latency_text as _latency_text  # the card's latency line, checked by the tests
from .published import render_published_card
from .rows import FAMILY_ORDER, FAMILY_TITLES, collect, ordered
from .table import (
    CARDS_DIR,
    TABLE_END,
    TABLE_PAGE,
    TABLE_START,
    render_cards_index,
    render_readme_table,
    replace_readme_table,
)
from .text import GENERATED

__all__ = [
    "CARDS_DIR",
    "FAMILY_ORDER",
    "FAMILY_TITLES",
    "GENERATED",
    "TABLE_END",
    "TABLE_PAGE",
    "TABLE_START",
    "check",
    "collect",
    "ordered",
    "render_all",
    "render_card",
    "render_lm_card",
    "render_cards_index",
    "render_published_card",
    "render_readme_table",
    "replace_readme_table",
    "write_all",
]
