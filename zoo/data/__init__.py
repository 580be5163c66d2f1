"""Datasets behind one resolver (:func:`zoo.data.sources.resolve`: a name -> a source -> splits): image folders,
Hugging Face datasets on disk, the benchmark sets' distributed files (:mod:`zoo.data.standard`), bundled small real
data, text corpora, shards and streams, synthetic sets."""

from .errors import DataError

__all__ = ["DataError"]
