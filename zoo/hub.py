"""Hub downloads with verification, and reading a Hub repo's config.json.

Downloads go through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``cache_dir``) and are
verified before they are read: against the sha256 the publisher recorded (``hf_hub_sha256`` in the pretrained cfg;
``config.json`` of a zoo-published repo carries it), else against the sha256 the Hub gives as the file's ETag.
Publishing (the other direction) is :mod:`zoo.publish`.
"""

import json
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .weights import CheckpointError, ChecksumError, sha256_file

__all__ = [
    "WEIGHTS_NAME",
    "bounded_call",
    "download",
    "hub_timeout",
    "endpoint_reachable",
    "offline_mode",
    "read_config_file",
    "read_hub_config",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# a config.json (labels included) is kilobytes; anything this large is not one
MAX_CONFIG_BYTES = 16 << 20
# the sections of a config.json the zoo reads, and the JSON type each must have
_CONFIG_SECTIONS = {"architecture": str, "pretrained_cfg": dict, "model_args": dict, "hf_hub_sha256": str}


def endpoint_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Quick TCP check of the Hub endpoint (skipped behind a proxy, where the client must decide)."""
    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return True
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


_SHA256 = re.compile(r"[0-9a-f]{64}")

HUB_TIMEOUT_VAR = "ZOO_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 120.0  # seconds for one Hub call: a config, a checkpoint, a repo's creation or an upload


def hub_timeout() -> float:
    """The longest wait for one Hub call, in seconds: ``ZOO_HUB_TIMEOUT``, else :data:`DEFAULT_HUB_TIMEOUT`."""
    text = os.environ.get(HUB_TIMEOUT_VAR, "").strip()
    if not text:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{HUB_TIMEOUT_VAR}={text!r} is not a number of seconds above 0: set it so, or unset it")
    return value


def bounded_call(call: Callable[[], Any], what: str) -> Any:
    """``call()``, given up after :func:`hub_timeout` seconds with a ``TimeoutError`` naming the Hub and ``what``
    was under way. A Hub that accepts connections and never answers would otherwise hold the caller for minutes
    (the client's read timeouts, each retried); the call runs in a daemon thread that is left to its socket, and
    a file it was downloading stays in the cache's incomplete form, never read."""
    timeout, done = hub_timeout(), {}

    def run() -> None:
        try:
            done["value"] = call()
        except BaseException as e:  # handed to the caller's thread
            done["error"] = e

    worker = threading.Thread(target=run, name="zoo-hub-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(
            f"the Hub at {constants.ENDPOINT} did not answer within {timeout:g} s while {what}. Check the network "
            f"or HF_ENDPOINT and try again ({HUB_TIMEOUT_VAR}=SECONDS waits longer)"
        )
    if "error" in done:
        raise done["error"]
    return done["value"]


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE``: huggingface_hub's setting (read when it was imported) or the environment now."""
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _cached_etag(path: str) -> str | None:
    """The ETag a cached Hub file was stored under (huggingface_hub names blobs after it), if it is a sha256."""
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name):
        return blob.name
    return None


def _verify_sha256(path: str, expected: str | None, where: str, source: str) -> None:
    if not expected:
        return
    expected = str(expected).lower()
    if not _SHA256.fullmatch(expected):
        raise CheckpointError(f"{where}: the recorded sha256 {expected!r} ({source}) is not a 64-digit hex digest")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{where} failed its checksum: sha256 {actual}, but {source} says {expected}. Nothing was loaded, and "
            f"nothing was deleted; the file is at {path}. If the publisher has replaced it on purpose, delete that "
            f"file (or the repo's folder in the cache) to download it again; otherwise tell the publisher."
        )


def download(
    repo_id: str,
    filename: str,
    *,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
) -> str:
    """Fetch ``filename`` from Hub repo ``repo_id`` into the Hugging Face cache and verify it; returns its path.

    ``HF_ENDPOINT`` picks the Hub, ``cache_dir`` the cache (default: huggingface_hub's), ``HF_HUB_OFFLINE=1``
    uses the cache only. When the endpoint cannot be reached the cached copy is used if there is one; otherwise
    the error says so at once (the client alone would retry for ~25 s first); a Hub that accepts and never
    answers is given up after :func:`hub_timeout` seconds, the same way. The file's sha256 must equal
    ``sha256`` when given, else the sha256 the Hub gave as its ETag (LFS files): a mismatch raises
    :class:`ChecksumError` and deletes nothing.
    """

    endpoint = constants.ENDPOINT
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    where = f"hf-hub:{repo_id}/{filename}"
    is_offline = offline_mode()
    offline = is_offline or not endpoint_reachable(endpoint)

    def fetch(local_only: bool) -> str:
        # the endpoint read once, here: a call given up on (bounded_call) keeps asking the Hub it was given
        return hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_only, endpoint=endpoint
        )

    try:
        try:
            path = fetch(True) if offline else bounded_call(lambda: fetch(False), f"fetching {where}")
        except TimeoutError as stalled:  # a Hub that never answers: the cached copy, as for one not reached
            try:
                path = fetch(True)
            except LocalEntryNotFoundError:
                raise CheckpointError(f"{stalled}; {where} is not in the local cache {cache} either") from None
    except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError: caught first)
        if is_offline:
            raise CheckpointError(
                f"offline mode is on (HF_HUB_OFFLINE=1) and {where} is not in the local cache {cache}. Unset "
                f"HF_HUB_OFFLINE to download it from {endpoint}, or pass cache_dir= for a cache that holds it."
            ) from e
        raise CheckpointError(
            f"could not reach the Hub at {endpoint} to fetch {where}, and it is not in the local cache {cache}. "
            f"Connect, set HF_ENDPOINT to a reachable Hub or mirror (HF_HUB_OFFLINE=1 uses cached files only), "
            f"or pass pretrained_cfg_overlay={{'file': PATH}}."
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"the Hub at {endpoint} has no revision {revision or 'main'!r} of {repo_id}") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"the Hub has no {filename} in {repo_id}: there is no repo {repo_id} at {endpoint} (if it is private "
            f"or gated, log in with `hf auth login` or set HF_TOKEN)"
        ) from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"the Hub has no {filename} in {repo_id} (the repo exists at {endpoint})") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise CheckpointError(f"the Hub at {endpoint} refused {where} (HTTP {status}): {str(e).splitlines()[0]}") from e
    if sha256:
        _verify_sha256(path, sha256, where, "the sha256 recorded for it (hf_hub_sha256)")
    else:
        _verify_sha256(path, _cached_etag(path), where, "the Hub's ETag for it")
    return path


def read_config_file(path: str | os.PathLike, where: str) -> dict[str, Any]:
    """A ``config.json`` as a dict: a JSON object of a sane size whose sections the zoo reads have their types.

    ``where`` names the file in messages (a Hub address or the path). What the sections may hold (an architecture
    and its preprocessing, nothing that names files or steers loading) is checked by :mod:`zoo.factory`.
    """
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{where} is over {MAX_CONFIG_BYTES >> 20} MiB, which no config.json is; not read")
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{where} is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} is not a JSON object")
    for key, kind in _CONFIG_SECTIONS.items():
        if config.get(key) is not None and not isinstance(config[key], kind):
            raise CheckpointError(
                f"{where}: {key!r} must be a JSON {'object' if kind is dict else 'string'}, "
                f"got {type(config[key]).__name__}"
            )
    if config.get("hf_hub_sha256") is not None and not _SHA256.fullmatch(config["hf_hub_sha256"].lower()):
        raise CheckpointError(f"{where}: 'hf_hub_sha256' is not a 64-digit hex sha256")
    return config


def read_hub_config(repo_id: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``config.json`` of Hub repo ``repo_id`` (downloaded and verified), as a dict (see
    :func:`read_config_file` for what is checked here)."""
    path = download(repo_id, CONFIG_NAME, cache_dir=cache_dir)
    return read_config_file(path, f"hf-hub:{repo_id}/{CONFIG_NAME}")
