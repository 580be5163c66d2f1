"""Publishing to the Hub and loading back, with the real huggingface_hub client against tests/fakehub.py.

Uploads take the classic preupload -> LFS batch -> PUT -> commit path (``HF_HUB_DISABLE_XET``); the endpoint,
cache and offline switch are set on ``huggingface_hub.constants`` for each test (FakeHub.use), since the client
reads ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` only when it is imported.
"""

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import pytest
import torch
import yaml
from fakehub import COMMIT, point_hub_at
from small_lms import SMALL
from tolerances import assert_float32_close, in_float64
from torch import nn

import zoo
from zoo import cli, factory, publish
from zoo import hub as zhub
from zoo.publish import PublishError
from zoo.weights import CheckpointError, ChecksumError

pytestmark = pytest.mark.hub

NAME = "poolformer_s12"  # a small head on a real architecture; 32x32 inputs keep profiling cheap
DATA = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
METRICS = {"top1": 97.25, "top5": 99.75, "loss": 0.125, "dataset": "digits", "split": "test"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return zoo.create_model(NAME, num_classes=3).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """One exported folder, reused by the tests that only need files to serve or upload."""
    return publish.export_pretrained(
        model,
        tmp_path_factory.mktemp("export"),
        model_name=NAME,
        model_kwargs={"num_classes": 3},
        metrics=METRICS,
        data_config=DATA,
        repo_id="me/pf-digits",
        latency_runs=0,
    )


def _serve(hub, repo, folder):
    hub.repos[repo] = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def _x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _same_outputs(a, b):
    with torch.no_grad():
        return torch.equal(a.eval()(_x()), b.eval()(_x()))


# ------------------------------------------------------------------------------------------------------------------
# publish -> download round trip


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_push_to_hub_then_create_model_from_a_fresh_cache(hub, model, tmp_path):
    recipe = {"model": NAME, "model_kwargs": {"num_classes": 3, "drop_path_rate": 0.1}, "lr": 0.004, "epochs": 30}
    url = zoo.push_to_hub(
        model,
        "me/pf-digits",
        model_kwargs=recipe["model_kwargs"],
        metrics=METRICS,
        recipe=recipe,
        data_config=DATA,
        out_dir=tmp_path / "out",
        cards_dir=tmp_path / "cards",
        latency_runs=2,
    )
    assert url == f"{hub.endpoint}/me/pf-digits"
    # the client's upload protocol, in order: create, README check, preupload, LFS batch + PUT, commit
    posts = [line.split("?")[0] for line in hub.log if not line.startswith("GET /api/agent-harnesses")]
    assert posts[0] == "POST /api/repos/create" and "POST /api/validate-yaml" in posts
    assert (
        posts.index("POST /api/models/me/pf-digits/preupload/main")
        < posts.index("POST /me/pf-digits.git/info/lfs/objects/batch")
        < posts.index("POST /api/models/me/pf-digits/commit/main")
    )
    assert sum(line.startswith("PUT /__lfs/") for line in posts) == 1  # only the weights go through LFS

    out = tmp_path / "out"
    served = hub.repos["me/pf-digits"]
    assert sorted(served) == ["README.md", "config.json", "model.safetensors"]
    assert all(served[name] == (out / name).read_bytes() for name in served)
    sha = hashlib.sha256(served["model.safetensors"]).hexdigest()
    config = json.loads(served["config.json"])
    assert config["hf_hub_sha256"] == sha and config["architecture"] == NAME and config["num_classes"] == 3
    assert config["num_features"] == model.num_features
    assert config["model_args"] == {"num_classes": 3, "in_chans": 3, "global_pool": "avg"}  # no drop_path_rate
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and config["pretrained_cfg"]["std"] == [0.25] * 3
    assert "notes" not in config["pretrained_cfg"]  # the registry's notes describe the authors' weights
    assert (tmp_path / "cards" / "me--pf-digits.md").read_bytes() == served["README.md"]

    fresh = tmp_path / "fresh-cache"
    loaded = zoo.create_model("hf-hub:me/pf-digits", pretrained=True, cache_dir=fresh)
    assert _same_outputs(model, loaded)
    assert loaded.num_classes == 3 and loaded.pretrained_cfg["input_size"] == [3, 32, 32]
    assert loaded.pretrained_cfg["hf_hub_id"] == "me/pf-digits" and loaded.pretrained_cfg.get("notes") is None
    assert (fresh / "models--me--pf-digits" / "blobs" / sha).is_file()  # cached by huggingface_hub, under cache_dir
    assert not (tmp_path / "hf-cache" / "models--me--pf-digits").exists()
    gets = [line for line in hub.log if line.startswith("GET /me/pf-digits/resolve/")]
    assert len(gets) == 2  # config.json and model.safetensors, once each
    again = zoo.create_model("hf-hub:me/pf-digits", pretrained=True, cache_dir=fresh)
    assert _same_outputs(model, again)
    assert [line for line in hub.log if line.startswith("GET /me/pf-digits/resolve/")] == gets  # from the cache


def test_model_card_metadata_metrics_recipe_and_checksum(exported, model):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.library_name == "zoo" and data.license == zoo.model_info(NAME)["license"]
    assert data.pipeline_tag == "image-classification" and data.datasets == ["digits"]
    assert {"image-classification", "zoo", "metaformer", "timm"} <= set(data.tags)
    results = {r.metric_name: r for r in data.eval_results}
    assert sorted(results) == ["loss", "top-1", "top-5"]
    assert results["top-1"].metric_value == METRICS["top1"] and results["top-1"].metric_type == "accuracy"
    assert results["top-5"].metric_value == METRICS["top5"] and results["loss"].metric_value == METRICS["loss"]
    assert all(r.dataset_type == "digits" and r.dataset_split == "test" for r in data.eval_results)
    sha = hashlib.sha256((exported / "model.safetensors").read_bytes()).hexdigest()
    assert f"`{sha}`" in card.text
    params = sum(p.numel() for p in model.parameters())
    assert f"| Params | {params:,} |" in card.text
    macs = zoo.profile(model, input_size=(3, 32, 32)).macs
    assert f"MACs @ 3 x 32 x 32 | {macs / 1e6:,.2f} M" in card.text
    assert 'zoo.create_model("hf-hub:me/pf-digits", pretrained=True)' in card.text


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_a_runs_count_feeds_the_card_without_profiling_again(model, tmp_path, monkeypatch):
    """A run's metrics.json carries the MACs zoo.profile counted at the input the card states: the card takes that
    figure (one count, one figure in both) and only times the latency; at another input size it counts afresh."""
    counted = zoo.profile(model, input_size=(3, 32, 32))
    metrics = {**METRICS, "macs": counted.macs, "macs_input": list(counted.input_size)}

    def recount(*args, **kwargs):
        raise AssertionError("profiled again")

    with monkeypatch.context() as m:
        m.setattr(publish, "profile", recount)
        summary = publish._profile_summary(model, "image-classification", (3, 32, 32), 2, counted=metrics)
    assert summary["macs"] == counted.macs and summary["input_size"] == [3, 32, 32] and summary["latency_ms"] > 0
    other = publish._profile_summary(model, "image-classification", (3, 64, 64), 0, counted=metrics)
    assert other["macs"] == zoo.profile(model, input_size=(3, 64, 64)).macs != counted.macs


def test_publish_run_folder_with_the_command_line(hub, tmp_path, capsys, monkeypatch):
    """A run folder laid out as train.py writes it, published with `zoo publish`; token from --token-env."""
    run = tmp_path / "runs" / "digits-1"
    (run / "checkpoints").mkdir(parents=True)
    args = {
        "model": NAME,
        "model_kwargs": {"num_classes": 4, "drop_path_rate": 0.05},
        "task": "image-classification",
        "seed": 0,
        "epochs": 3,
        "data": {"name": "digits", "img_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    recipe_text = "# resolved recipe\n" + yaml.safe_dump(args, sort_keys=False)
    (run / "args.yaml").write_text(recipe_text)
    trained = zoo.create_model(NAME, num_classes=4).eval()
    zoo.save_state_dict(trained, run / "model.safetensors")
    torch.save({"model": trained.state_dict(), "step": 10}, run / "checkpoints" / "last.pt")
    (run / "metrics.json").write_text(
        json.dumps({"top1": 95.5, "top5": 100.0, "loss": 0.2, "dataset": "digits", "params": 1, "macs": 2})
    )
    (run / "log.csv").write_text("step,loss\n1,2.3\n")
    hub.tokens = {"hf_good_token"}
    monkeypatch.setenv("PUBLISH_TOKEN", "hf_wrong_token_7f3a")
    argv = [
        "publish",
        str(run),
        "--repo",
        "me/digits-run",
        "--token-env",
        "PUBLISH_TOKEN",
        "--cards-dir",
        str(tmp_path / "cards"),
        "--latency-runs",
        "1",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "token" in err and "hf_wrong_token_7f3a" not in err
    assert "me/digits-run" not in hub.repos and not (tmp_path / "cards").exists()

    monkeypatch.setenv("PUBLISH_TOKEN", "hf_good_token")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"published {hub.endpoint}/me/digits-run" in out and "hf_good_token" not in out
    assert "Bearer hf_good_token" in hub.authorizations
    served = hub.repos["me/digits-run"]
    assert sorted(served) == ["README.md", "config.json", "model.safetensors"]
    assert served["model.safetensors"] == (run / "publish" / "model.safetensors").read_bytes()
    assert hashlib.sha256(served["model.safetensors"]).hexdigest() in out
    config = json.loads(served["config.json"])
    assert config["model_args"]["num_classes"] == 4 and "drop_path_rate" not in config["model_args"]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["mean"] == [0.5] * 3 and config["pretrained_cfg"]["std"] == [0.25] * 3
    card = served["README.md"].decode()
    assert recipe_text.strip() in card  # args.yaml, verbatim
    assert (tmp_path / "cards" / "me--digits-run.md").read_text() == card
    loaded = zoo.create_model("hf-hub:me/digits-run", pretrained=True)
    assert _same_outputs(trained, loaded)


def test_publish_run_refuses_runs_it_cannot_describe(hub, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(PublishError, match="not a finished training run: args.yaml, model.safetensors missing"):
        publish.publish_run(run, "me/x", cards_dir=None)
    (run / "args.yaml").write_text(yaml.safe_dump({"model": NAME, "model_kwargs": {"num_classes": 5}}))
    zoo.save_state_dict(zoo.create_model(NAME, num_classes=3), run / "model.safetensors")
    mismatch = r"(?s)does not fit poolformer_s12.*head.fc.weight: checkpoint \(3, 512\) vs model \(5, 512\)"
    with pytest.raises(CheckpointError, match=mismatch):
        publish.publish_run(run, "me/x", cards_dir=None)
    with pytest.raises(PublishError, match="not of the form ORG/NAME"):
        publish.publish_run(run, "no-org", cards_dir=None)
    assert not [line for line in hub.log if not line.startswith("GET /api/agent-harnesses")]  # nothing was sent


# ------------------------------------------------------------------------------------------------------------------
# verification: nothing unverified is loaded, nothing the user had is deleted


def test_tampered_weights_fail_the_checksum_and_load_nothing(hub, exported, model, tmp_path):
    _serve(hub, "me/pf-digits", exported)
    good = zoo.create_model("hf-hub:me/pf-digits", pretrained=True)  # cached: the published file
    assert _same_outputs(model, good)
    cache = tmp_path / "hf-cache" / "models--me--pf-digits"
    good_sha = json.loads((exported / "config.json").read_text())["hf_hub_sha256"]
    assert (cache / "blobs" / good_sha).is_file()

    # the file is replaced on the server (a new commit) by another valid checkpoint; config.json is unchanged
    from safetensors.torch import load, save

    weights = load(hub.repos["me/pf-digits"]["model.safetensors"])
    weights["head.fc.bias"] = weights["head.fc.bias"] + 1.0  # a valid file with other weights
    tampered = save(weights, metadata={"format": "pt"})
    hub.repos["me/pf-digits"]["model.safetensors"] = tampered
    hub.heads["me/pf-digits"] = "f" * 40
    bad_sha = hashlib.sha256(tampered).hexdigest()
    with pytest.raises(ChecksumError, match=f"sha256 {bad_sha}, but the sha256 recorded for it .* says {good_sha}"):
        zoo.create_model("hf-hub:me/pf-digits", pretrained=True)
    before = {k: v.clone() for k, v in good.state_dict().items()}
    cfg = {"hf_hub_id": "me/pf-digits", "hf_hub_filename": "model.safetensors", "hf_hub_sha256": good_sha}
    with pytest.raises(ChecksumError, match="Nothing was loaded, and nothing was deleted"):
        factory.load_pretrained(good, cfg)
    assert all(torch.equal(before[k], v) for k, v in good.state_dict().items())
    assert _same_outputs(model, good)
    # the earlier download is still in the cache, intact, next to the rejected one
    assert hashlib.sha256((cache / "blobs" / good_sha).read_bytes()).hexdigest() == good_sha
    assert (cache / "blobs" / bad_sha).is_file()
    assert (cache / "snapshots" / COMMIT / "model.safetensors").resolve() == (cache / "blobs" / good_sha).resolve()


def test_registered_weights_are_checked_against_the_cfg_sha_or_the_hub_etag(hub, exported, model, tmp_path):
    cfg = zoo.model_info(NAME)["pretrained_cfg"]
    repo, filename = cfg["hf_hub_id"], cfg["hf_hub_filename"]
    content = (exported / "model.safetensors").read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    hub.repos[repo] = {filename: content}
    cache = tmp_path / "own-cache"
    loaded = zoo.create_model(
        NAME, num_classes=3, pretrained=True, pretrained_cfg_overlay={"hf_hub_sha256": sha}, cache_dir=cache
    )
    assert _same_outputs(model, loaded)
    assert (cache / f"models--{repo.replace('/', '--')}" / "blobs" / sha).is_file()
    assert not (tmp_path / "hf-cache").exists()
    with pytest.raises(ChecksumError, match="the sha256 recorded for it"):
        zoo.create_model(
            NAME, num_classes=3, pretrained=True, pretrained_cfg_overlay={"hf_hub_sha256": "0" * 64}, cache_dir=cache
        )
    # no sha256 in the cfg: the Hub's ETag (the sha256 of an LFS file) is the reference; a file that changed
    # on its way (same ETag, other bytes) is caught in a fresh cache
    hub.etags[(repo, filename)] = sha
    hub.repos[repo][filename] = content[:-1] + bytes([content[-1] ^ 1])
    with pytest.raises(ChecksumError, match="the Hub's ETag for it"):
        zhub.download(repo, filename, cache_dir=tmp_path / "other-cache")
    first = zhub.download(repo, filename, cache_dir=cache)  # the copy cached first: still there, still verified
    assert hashlib.sha256(Path(first).read_bytes()).hexdigest() == sha


# ------------------------------------------------------------------------------------------------------------------
# errors users hit


def test_missing_repo_file_and_unknown_architecture_are_named(hub, exported):
    with pytest.raises(CheckpointError, match="the Hub has no config.json in nobody/nothing: there is no repo"):
        zoo.create_model("hf-hub:nobody/nothing", pretrained=True)
    _serve(hub, "me/half", exported)
    del hub.repos["me/half"]["model.safetensors"]
    with pytest.raises(CheckpointError, match=r"the Hub has no model.safetensors in me/half \(the repo exists"):
        zoo.create_model("hf-hub:me/half", pretrained=True)
    hub.repos["me/alien"] = {"config.json": json.dumps({"architecture": "resnet_9000"}).encode()}
    with pytest.raises(CheckpointError, match="'resnet_9000' model, which the zoo does not register"):
        zoo.create_model("hf-hub:me/alien", pretrained=True)


def test_private_repo_needs_a_token(hub, exported):
    publish.upload_folder(exported, "me/secret", private=True, token="hf_any")
    assert "me/secret" in hub.private
    with pytest.raises(CheckpointError, match="if it is private or gated, log in"):
        zoo.create_model("hf-hub:me/secret", pretrained=True)


def test_unreachable_hub_is_reported_at_once(hub, exported, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(
        PublishError,
        match=r"could not reach the Hub at http://127.0.0.1:9: nothing was uploaded.*"
        "HF_ENDPOINT",
    ):
        publish.upload_folder(exported, "me/pf-digits")
    with pytest.raises(
        CheckpointError,
        match=r"could not reach the Hub at http://127.0.0.1:9 to fetch "
        r"hf-hub:me/pf-digits/config.json.*HF_ENDPOINT.*HF_HUB_OFFLINE=1",
    ):
        zoo.create_model("hf-hub:me/pf-digits", pretrained=True)
    assert time.perf_counter() - start < 10  # no client retries with back-off


@pytest.fixture(scope="session")
def stalled_server() -> dict:
    """A Hub on 127.0.0.1 that accepts every connection and never answers, one per test process and never closed:
    its ``endpoint`` and the ``connections`` it holds.

    A call the zoo gave up on goes on in its daemon thread (``hub.bounded_call``) until the client's own timeouts
    and retries end it. Were this server closed after the test, those retries would be refused, and on a refused
    connection huggingface_hub closes its shared client, cutting the connection a later test is reading from
    (``ReadError: Bad file descriptor``). Kept open, the abandoned calls end on read timeouts, which close nothing
    shared."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)
    held: list = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, name="stalled-hub", daemon=True).start()
    return {"endpoint": f"http://127.0.0.1:{server.getsockname()[1]}", "connections": held}


@pytest.fixture
def stalled_hub(stalled_server, monkeypatch):
    """huggingface_hub pointed at :func:`stalled_server`, with a 1 s bound on each Hub call."""
    point_hub_at(monkeypatch, stalled_server["endpoint"])
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "1")
    return stalled_server["endpoint"]


def test_a_hub_that_never_answers_is_given_up_in_bounded_time(
    stalled_hub, stalled_server, exported, tmp_path, monkeypatch
):
    """A Hub that accepts and never answers: the load and the upload each give up after ZOO_HUB_TIMEOUT seconds
    with an error naming the Hub and what to do (the client alone waited minutes), and the upload is not reported
    as done."""
    start, connections = time.perf_counter(), len(stalled_server["connections"])
    with pytest.raises(CheckpointError, match=rf"the Hub at {stalled_hub} did not answer within 1 s while fetching "
                       r"hf-hub:me/pf-digits/config.json.*ZOO_HUB_TIMEOUT.*not in the local cache"):  # fmt: skip
        zhub.download("me/pf-digits", "config.json", cache_dir=tmp_path / "cache")
    assert len(stalled_server["connections"]) > connections  # it waited on this Hub, not on a name lookup
    with pytest.raises(PublishError, match=r"did not answer within 1 s while creating me/pf-digits.*publish again"):
        publish.upload_folder(exported, "me/pf-digits")
    assert time.perf_counter() - start < 20
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ZOO_HUB_TIMEOUT='soon' is not a number of seconds"):
        zhub.hub_timeout()


def test_auth_failure_names_the_problem_never_the_token(hub, exported, caplog, capsys):
    hub.tokens = {"hf_right"}
    secret = "hf_secret_do_not_print_91"
    with caplog.at_level(logging.DEBUG), pytest.raises(PublishError) as info:
        publish.upload_folder(exported, "me/pf-digits", token=secret)
    message = str(info.value)
    assert "HTTP 401" in message and "refused creating me/pf-digits" in message and "write token" in message
    captured = capsys.readouterr()
    assert secret not in message + captured.out + captured.err + caplog.text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "me/pf-digits" not in hub.repos
    assert publish.upload_folder(exported, "me/pf-digits", token="hf_right") == f"{hub.endpoint}/me/pf-digits"


def test_offline_mode_uses_the_cache_or_says_what_is_missing(hub, exported, model, monkeypatch, tmp_path):
    from huggingface_hub import constants

    _serve(hub, "me/pf-digits", exported)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        CheckpointError,
        match=r"offline mode is on \(HF_HUB_OFFLINE=1\) and "
        r"hf-hub:me/pf-digits/config.json is not in the local cache",
    ):
        zoo.create_model("hf-hub:me/pf-digits", pretrained=True)
    assert hub.log == []  # offline: not a single request

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    zoo.create_model("hf-hub:me/pf-digits", pretrained=True)  # fills the cache
    requests = len(hub.log)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert _same_outputs(model, zoo.create_model("hf-hub:me/pf-digits", pretrained=True))
    assert len(hub.log) == requests
    # a cached copy damaged on disk is caught offline too, and left where it is
    sha = json.loads((exported / "config.json").read_text())["hf_hub_sha256"]
    blob = tmp_path / "hf-cache" / "models--me--pf-digits" / "blobs" / sha
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ChecksumError, match="failed its checksum"):
        zoo.create_model("hf-hub:me/pf-digits", pretrained=True)
    assert blob.is_file()
    with pytest.raises(PublishError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\): nothing was uploaded"):
        publish.upload_folder(exported, "me/pf-digits")


# ------------------------------------------------------------------------------------------------------------------
# language models: the model's own config, the tokenizer, perplexity in the card


@dataclasses.dataclass
class _TinyConfig:
    vocab_size: int = 11
    hidden_size: int = 8
    num_hidden_layers: int = 1
    torch_dtype: torch.dtype = torch.float32


class _TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = _TinyConfig()
        self.embed = nn.Embedding(11, 8)
        self.head = nn.Linear(8, 11)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids))


def test_language_model_export_writes_its_config_and_tokenizer(tmp_path):
    lm_name = zoo.list_models(family="mobilellm")[0]
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    out = publish.export_pretrained(
        _TinyLM(),
        tmp_path / "out",
        model_name=lm_name,
        model_kwargs={"hidden_size": 8, "vocab_size": 11},
        metrics={"perplexity": 12.5, "loss": 2.53, "dataset": "pydoc_data"},
        recipe="model: x\nseed: 0\n",
        tokenizer_file=tokenizer,
        latency_runs=0,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 11 and config["hidden_size"] == 8 and config["torch_dtype"] == "float32"
    assert config["architecture"] == lm_name and config["model_args"] == {"hidden_size": 8, "vocab_size": 11}
    assert config["hf_hub_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert (out / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    perplexity, loss = card.data.eval_results
    assert (perplexity.task_type, perplexity.metric_type, perplexity.metric_value) == (
        "text-generation",
        "perplexity",
        12.5,
    )
    assert (loss.metric_type, loss.metric_value, loss.dataset_type) == ("loss", 2.53, "pydoc_data")
    assert card.data.pipeline_tag == "text-generation" and "model: x\nseed: 0" in card.text
    assert "tokenizer.json" in publish.exported_files(out)


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def test_language_model_round_trip_in_its_family_format(hub, tmp_path):
    """A zoo LM is published in its family's Hub format (a transformers Llama folder here) and loads back."""
    lm = zoo.create_model("mobilellm_125m", **SMALL).eval()
    zoo.push_to_hub(
        lm,
        "me/tiny-lm",
        model_kwargs=SMALL,
        metrics={"perplexity": 20.5, "dataset": "pydoc_data"},
        out_dir=tmp_path / "out",
        cards_dir=None,
    )
    served = hub.repos["me/tiny-lm"]
    assert {"README.md", "config.json", "model.safetensors"} <= set(served)
    config = json.loads(served["config.json"])
    assert config["architectures"] == ["LlamaForCausalLM"] and config["hidden_size"] == SMALL["hidden_size"]
    assert config["architecture"] == "mobilellm_125m" and config["model_args"] == SMALL
    assert config["hf_hub_sha256"] == hashlib.sha256(served["model.safetensors"]).hexdigest()
    loaded = zoo.create_model("hf-hub:me/tiny-lm", pretrained=True, cache_dir=tmp_path / "fresh").eval()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(_logits(lm(ids)), _logits(loaded(ids)))


@pytest.mark.slow
def test_published_language_model_folder_loads_in_transformers(tmp_path):
    import transformers

    lm = zoo.create_model("mobilellm_125m", **SMALL).eval()
    out = publish.export_pretrained(
        lm, tmp_path / "out", model_name="mobilellm_125m", model_kwargs=SMALL, latency_runs=0
    )
    reference = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # transformers' Llama against the zoo's: within 4x the zoo's own float32 error against float64
        assert_float32_close(reference(ids).logits, _logits(lm(ids)), _logits(in_float64(lm)(ids)), msg="Llama")
