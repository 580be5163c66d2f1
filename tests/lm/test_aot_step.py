"""The decode step built ahead of time (zoo.lm.aot_step): built once, kept, loaded again; it reads the model's own
tensors; where it cannot be built, torch.compile builds the step."""

import copy
import logging
import os
import zipfile

import pytest
import torch
from small_lms import TINY_DIMS, tiny_lm

from zoo.kernels import gemv
from zoo.lm import aot_step
from zoo.lm.compiled import COMPILED_STATE


def _prompt(length=9, seed=1):
    return torch.randint(0, TINY_DIMS["vocab_size"], (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """The packages go to a folder of this test's own: each test builds what it loads."""
    if not gemv.available():
        pytest.skip("the zoo's CPU kernels do not run here")
    monkeypatch.delenv(aot_step.ENV, raising=False)
    monkeypatch.setattr(aot_step, "package_folder", lambda: tmp_path / "steps")
    return tmp_path / "steps"


def _builds(monkeypatch) -> list:
    """The packages AOTInductor compiles from here on (the calls are counted, then made)."""
    made = []
    compile_package = torch._inductor.aoti_compile_and_package

    def counted(*args, **kwargs):
        made.append(kwargs.get("package_path"))
        return compile_package(*args, **kwargs)

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", counted)
    return made


@pytest.mark.slow  # two builds and a load: outside the 4-minute default run
def test_the_step_is_built_once_kept_and_loaded_by_a_copy(packages, monkeypatch):
    made = _builds(monkeypatch)
    model = tiny_lm("mobilellm_125m")
    ids = _prompt()
    eager = model.generate(ids, max_new_tokens=10)
    assert torch.equal(model.generate(ids, max_new_tokens=10, compile=True), eager)
    step = model.__dict__[COMPILED_STATE][2]
    assert step.run is not None and "aot_step" in step.run.__qualname__  # the built step, not torch.compile's
    assert len(made) == 1 and [p.suffix for p in packages.iterdir()] == [".pt2"]  # one package, whole
    # a copy (no compiled step of its own) exports the step again and loads the package: no second build
    clone = copy.deepcopy(model)
    assert torch.equal(clone.generate(ids, max_new_tokens=10, compile=True), eager)
    assert len(made) == 1
    # the package's C++ calls the kernels through their C entry points, none through the proxy executor: a layer's
    # query, key and value as one call, gate and up as another, o_proj, down_proj and the head one each
    calls, layers = step.run.kernel_calls, model.config.num_hidden_layers
    with zipfile.ZipFile(next(packages.iterdir())) as z:
        assert not [n for n in z.namelist() if n.endswith("wrapper.json")]  # the proxy executor's list of calls
        (source,) = [z.read(n).decode() for n in z.namelist() if n.endswith("wrapper.cpp")]
    assert source.count("AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_cpu_f32_3(") == layers
    assert calls == {
        "zoo_gemv::f32_3": layers,
        "zoo_gemv::f32_2": layers,
        "zoo_gemv::f32": 2 * layers + 1,
        "zoo_gemv::attend": layers,
    }
    # another model of other weights but the same architecture loads it too, and decodes its own weights
    other = tiny_lm("mobilellm_125m")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)
    assert torch.equal(other.generate(ids, max_new_tokens=10, compile=True), other.generate(ids, max_new_tokens=10))
    assert len(made) == 1


@pytest.mark.slow  # a build: outside the 4-minute default run
def test_the_step_reads_the_models_tensors_where_they_are(packages):
    model = tiny_lm("mobilellm_125m")
    ids = _prompt(5)
    model.generate(ids, max_new_tokens=4, compile=True)
    step = model.__dict__[COMPILED_STATE][2]
    with torch.no_grad():  # in place, through .data: no version counter moves, the step sees it all the same
        model.model.layers[0].mlp.down_proj.weight.data.mul_(3.0)
        model.model.norm.weight.data.add_(0.5)
    assert torch.equal(model.generate(ids, max_new_tokens=8, compile=True), model.generate(ids, max_new_tokens=8))
    assert model.__dict__[COMPILED_STATE][2] is step


@pytest.mark.slow  # a torch.compile of the step: outside the 4-minute default run
def test_a_step_that_cannot_be_built_ahead_of_time_is_compiled_with_a_warning(packages, monkeypatch, caplog):
    def refused(*args, **kwargs):
        raise RuntimeError("no export today")

    monkeypatch.setattr(torch.export, "export", refused)
    model = tiny_lm("mobilellm_125m")
    ids = _prompt()
    with caplog.at_level(logging.WARNING, logger="zoo.lm.aot_step"):
        compiled = model.generate(ids, max_new_tokens=8, compile=True)
    assert torch.equal(compiled, model.generate(ids, max_new_tokens=8))
    assert "could not be built ahead of time (no export today)" in caplog.text
    assert not packages.exists() or not any(packages.iterdir())


@pytest.mark.slow  # a build: outside the 4-minute default run
def test_a_folder_that_cannot_be_written_builds_in_a_temporary_one_and_keeps_nothing(tmp_path, monkeypatch):
    if not gemv.available():
        pytest.skip("the zoo's CPU kernels do not run here")
    if os.geteuid() == 0:  # root writes anywhere: a file stands where the folder would be made
        blocked = tmp_path / "file"
        blocked.write_text("")
        folder = blocked / "steps"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        folder = tmp_path / "ro" / "steps"
    monkeypatch.setattr(aot_step, "package_folder", lambda: folder)
    monkeypatch.setattr(aot_step.tempfile, "gettempdir", lambda: str(tmp_path))
    model = tiny_lm("mobilellm_125m")
    ids = _prompt()
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    assert "aot_step" in model.__dict__[COMPILED_STATE][2].run.__qualname__
    assert not folder.exists() and not list(tmp_path.glob("*.pt2"))  # built beside, loaded, removed


def test_zoo_aot_step_0_leaves_the_step_to_torch_compile(monkeypatch):
    monkeypatch.setenv(aot_step.ENV, "0")

    def untouched(*args, **kwargs):
        raise AssertionError("exported although ZOO_AOT_STEP=0")

    monkeypatch.setattr(torch.export, "export", untouched)
    assert aot_step.aot_step(torch.nn.Identity(), {}) is None


def test_each_kernel_has_a_c_entry_point_declared_from_its_schema(monkeypatch):
    """What AOTInductor is told of the kernels' C entry points (zoo/kernels/gemv.cpp): one declaration per
    operator that returns tensors, its arguments from the schema, one handle per result; none where the kernels'
    library is not found (the proxy executor calls them then)."""
    if not gemv.available():
        pytest.skip("the zoo's CPU kernels do not run here")
    shims = aot_step.c_shims()
    ops = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("zoo_gemv::")}
    assert {op.name() for op in shims} == ops - {"zoo_gemv::cpu_isas"}
    assert shims[torch.ops.zoo_gemv.int4.default] == [
        "AOTITorchError aoti_torch_cpu_int4(AtenTensorHandle x, AtenTensorHandle codes, AtenTensorHandle scale, "
        "AtenTensorHandle zero, int64_t group_size, AtenTensorHandle* ret0)"
    ]
    assert shims[torch.ops.zoo_gemv.attend.default][0].endswith("double scale, AtenTensorHandle* ret0)")
    assert shims[torch.ops.zoo_gemv.q8_0.default][0].endswith(
        "(AtenTensorHandle x, AtenTensorHandle* ret0, AtenTensorHandle* ret1)"
    )
    monkeypatch.setattr(gemv, "build_folder", lambda: None)
    assert aot_step.c_shims() == {}
