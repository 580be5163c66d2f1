"""The kernels' AVX-512 and VNNI paths on a CPU without them: the kernels' source with every AVX-512 and VNNI
intrinsic routed through SIMDe (SIMD Everywhere, ``apt install libsimde-dev``: each emulated on AVX2, lane for lane
what the instruction does) and a CPU mask that reports every path, built with the production flags
(:data:`zoo.kernels.gemv._FLAGS`). Built and run in a process of its own (its operators have the real build's names);
every path must give the bits of the AVX2 one. The default run checks a subset of the shapes (the build is cached
beside the real one, keyed by its source); ``-m slow`` checks all of them on the same build. On a CPU that runs the wide paths itself,
test_gemv.py and test_gemv_a8.py check them for real."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo.kernels import gemv

SIMDE = Path("/usr/include/simde/x86/avx512.h")

pytestmark = [
    pytest.mark.skipif(not gemv.available(), reason="the kernels need an AVX2 CPU and a C++ compiler"),
    pytest.mark.skipif(not SIMDE.is_file(), reason="SIMDe's headers are not installed (apt install libsimde-dev)"),
]

# SIMDe 0.7.4 has no 512-bit int32 -> float32 conversion: two 256-bit halves, each rounded as the instruction does
_CVT = """
static inline simde__m512 simde_mm512_cvtepi32_ps(simde__m512i a) {
  simde__m512 r;
  const __m256 lo = _mm256_cvtepi32_ps(simde_mm512_castsi512_si256(a));
  const __m256 hi = _mm256_cvtepi32_ps(simde_mm512_extracti64x4_epi64(a, 1));
  std::memcpy(&r, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&r) + 32, &hi, 32);
  return r;
}
"""


def emulated(text: str, name: str) -> str:
    """One kernel file with the wide intrinsics and types as SIMDe's, no target attributes, every path reported."""
    text = text.replace("_mm256_dpbusd_avx_epi32", "simde_mm256_dpbusd_epi32")
    text = re.sub(r"(?<![A-Za-z_])_mm256_dpbusd_epi32", "simde_mm256_dpbusd_epi32", text)
    text = re.sub(r"(?<![A-Za-z_])_mm512_", "simde_mm512_", text)
    text = re.sub(r"(?<![A-Za-z_])__m512(i|d)?\b", lambda m: "simde__m512" + (m.group(1) or ""), text)
    if name == "simd.h":
        head = "#include <immintrin.h>\n"
        assert head in text
        text = text.replace(head, head + "#include <cstring>\n#include <simde/x86/avx512.h>\n" + _CVT, 1)
        for target in ("ZOO_T_VNNI", "ZOO_T_512", "ZOO_T_F512"):
            text, n = re.subn(rf"#define {target} .*", f"#define {target}", text)
            assert n == 1, target
        text, n = re.subn(
            r"found \|= kAvx512fBit;\n  return found;",
            "found |= kAvx512fBit;\n  return found | 2 | 4 | kAvx512fBit;",
            text,
        )
        assert n == 1
    return text


_CHECK = """
import os, sys
import torch
import zoo.kernels.gemv as g

folder, quick = sys.argv[1], sys.argv[2] == "quick"
g.SOURCE_DIR = folder
g._TEXTS = {n: open(os.path.join(folder, n)).read() for n in g.SOURCE_FILES}
g._SOURCE = "".join(g._TEXTS.values())
assert g.available() and g.cpu_isas() == g.ISAS and g.f32_paths() == g.F32_PATHS, (g.cpu_isas(), g.f32_paths())
torch.manual_seed(0)
ops, checked = torch.ops.zoo_gemv, 0
for k in (576, 1536, 600, 37):  # float32: whole turns of 32 columns, a tail of eights, a scalar tail
    x, ws = torch.randn(1, k), [torch.randn(n, k) for n in (96, 37, 16)]
    want = ops.f32_3(x, *ws, 0)
    got = ops.f32_3(x, *ws, 1)
    assert all(torch.equal(a, b) for a, b in zip(want, got)), k
    checked += 1
shapes = ((8, 0, 576), (4, 32, 608)) if quick else ((8, 0, 576), (8, 0, 544), (4, 32, 608), (4, 64, 640), (4, 128, 1536))
for bits, gs, k in shapes:
    for n in (37,) if quick else (37, 96, 8):  # 5 tiles (two pairs and one alone), 12 tiles, one tile
        for m in (1, 4) if quick else (1, 3, 4, 9, 20):  # a decoded token, the plain rows, the prompt GEMM
            x = torch.randn(m, k) * torch.rand(m, 1) * 4
            if bits == 8:
                q, scale = torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) + 0.1
                run = lambda isa: ops.int8_a8(x, q, scale, isa)
                packed = g.repack_int8(q, scale)
            else:
                codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8)
                s, z = (torch.rand(n, k // gs) - 0.5).half(), (torch.rand(n, k // gs) - 0.5).half()
                run = lambda isa: ops.int4_a8(x, codes, s, z, gs, isa)
                packed = g.repack_int4(codes, s, z)
            want = run(0)
            for isa in range(len(g.ISAS)):
                assert torch.equal(run(isa), want), (bits, gs, k, n, m, isa)
                assert torch.equal(ops.a8_tiles(x, *packed, n, gs, isa), want), (bits, gs, k, n, m, isa, "tiles")
                checked += 1
print("checked", checked)
"""


def _check(tmp_path, quick: bool, build_root: Path) -> None:
    folder = tmp_path / "kernels"
    folder.mkdir()
    for name in gemv.SOURCE_FILES:
        text = (Path(gemv.SOURCE_DIR) / name).read_text(encoding="utf-8")
        (folder / name).write_text(emulated(text, name), encoding="utf-8")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(build_root), "OMP_NUM_THREADS": "2"}
    env.pop("ZOO_GEMV_ISA", None)
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(_CHECK), encoding="utf-8")
    mode = "quick" if quick else "full"
    done = subprocess.run([sys.executable, str(script), str(folder), mode], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    checks = 4 + (2 * 1 * 2 if quick else 5 * 3 * 5) * len(gemv.ISAS)
    assert done.stdout.split()[-2:] == ["checked", str(checks)]


def test_every_wide_path_gives_the_avx2_bits_on_a_subset_under_emulation(tmp_path):
    """The default run's check: every float32 width, and an int8 and an int4 weight through the decode tiles and the
    prompt GEMM on every path. The emulated build is kept in torch's extension folder (a name of its own, keyed by
    the emulated source and the flags), so only the first run pays for it."""
    from torch.utils import cpp_extension

    _check(tmp_path, quick=True, build_root=Path(cpp_extension.get_default_build_root()))


@pytest.mark.slow  # every shape (the default run's build, kept in torch's extension folder)
def test_every_wide_path_gives_the_avx2_bits_under_emulation(tmp_path):
    from torch.utils import cpp_extension

    _check(tmp_path, quick=False, build_root=Path(cpp_extension.get_default_build_root()))
