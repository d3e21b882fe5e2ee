"""What a CPU can check of benchmarks/gpu_check.sh and its helpers: argument parsing and the commands it
would run (held against bench_model.py's own parser and tests/test_gpu.py), the offline install into a
scratch venv (torch untouched), the requirement lists of the wheelhouse, the summary table from real
pytest and benchmark outputs, and bench_model.py's JSON at a tiny shape on the CPU. The scripts' lint
is in test_launch.py; the GPU runs themselves are tests/test_gpu.py.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def load_bench_model():
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "benchmarks" / "bench_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(*args: str, script: Path = SCRIPT, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "WHEELHOUSE", "VENV", "OUT")}
    e["VENV"] = "/nonexistent/.gpuenv"  # a venv left in the checkout by a real run changes nothing here
    e.update(env)
    return subprocess.run(["bash", str(script), *args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


def dry_commands(*args: str) -> list[tuple[int | None, list[str]]]:
    """The '+ ...' lines of --dry-run as (time limit or None, argv)."""
    proc = check("--dry-run", *args, OUT="/out")
    assert proc.returncode == 0, proc.stderr
    out = []
    for line in proc.stdout.splitlines():
        assert line.startswith("+ "), line
        argv = shlex.split(line[2:])
        if argv[0] == "timeout":
            out.append((int(argv[1]), argv[2:]))
        else:
            out.append((None, argv))
    return out


# ------------------------------------------------------------------------------------------- arguments


def test_dry_run_commands_match_the_code():
    cmds = dry_commands()
    assert [argv[:2] for _, argv in cmds] == [
        ["python3", "-m"],  # venv
        ["python3", "-m"],  # pip install
        ["/nonexistent/.gpuenv/bin/python", "-m"],  # pytest
        ["/nonexistent/.gpuenv/bin/python", "benchmarks/bench_model.py"],
        ["/nonexistent/.gpuenv/bin/python", "benchmarks/bench_model.py"],
    ]
    venv, pip, tests, base, large = (argv for _, argv in cmds)
    assert venv[2:] == ["venv", "--without-pip", "/nonexistent/.gpuenv"]
    assert pip[2:7] == ["pip", "--python", "/nonexistent/.gpuenv/bin/python", "install", "--no-index"]
    assert pip[7:9] == ["--find-links", ".whl"]
    assert pip[-2:] == ["-r", ".whl/requirements.txt"]
    assert tests[2:6] == ["pytest", "tests/test_gpu.py", "-m", "gpu"] and tests[-2:] == ["--junitxml", "/out/tests.xml"]

    bench = load_bench_model()
    shapes = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096)}
    limits = [limit for limit, _ in cmds if limit is not None]
    for name, argv in (("base", base), ("large", large)):
        a = bench.parse_args(argv[2:])  # bench_model.py's own parser: a renamed flag fails here
        assert (a.device, a.dtype) == ("cuda", "bf16")
        assert (a.hidden, a.layers, a.heads, a.intermediate) == shapes[name]
        assert (a.seq, a.entities, a.vocab, a.entity_vocab, a.entity_emb) == (512, 128, 250002, 1_200_000, 256)
        assert a.json == f"/out/bench_mluke-{name}.json"
        limit = limits[-2] if name == "base" else limits[-1]
        assert 2 * a.timeout < limit  # both models' runs fit in the part's limit
    assert sum(limits) + 50 <= 480  # install's 50 s is not a timeout line in a dry run


def test_gpu_tests_are_collected_and_the_marker_selects_them():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "--collect-only", "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    ids = [ln.split("::")[1] for ln in proc.stdout.splitlines() if ln.startswith("tests/test_gpu.py::")]
    assert ids == [
        "test_stage1_zero3_bf16_checkpointing_on_the_gpu",
        "test_stage2_zero1_stopped_and_resumed_gives_the_same_losses",
        "test_fp16_three_steps",
        "test_ds_accelerator_cpu_on_a_gpu_machine_trains_on_the_cpu",
        "test_compiled_flex_attention_follows_the_eager_sdpa_run",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these tests run")
def test_gpu_tests_are_skipped_without_cuda():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gpu.py", "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "SKIPPED [5] tests/test_gpu.py: needs a CUDA GPU" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("5 skipped in ")


def test_parts_and_budget():
    [(limit, argv)] = dry_commands("--only", "tests")
    assert argv[2:4] == ["pytest", "tests/test_gpu.py"] and limit == 240
    cmds = dry_commands("--skip-install", "--budget", "100")
    assert [argv[0] for _, argv in cmds] == ["python3"] * 3  # no venv: the image's interpreter as it is
    assert [limit for limit, _ in cmds] == [100, 75, 100]  # no part runs past the budget
    bench = load_bench_model()
    assert [bench.parse_args(argv[2:]).timeout for _, argv in cmds[1:]] == [(75 - 6) // 2, (100 - 6) // 2]

    for args, message in [
        (["--only", "tests,gpu"], "error: --only: unknown part 'gpu' (parts: install tests mluke-base mluke-large)"),
        (["--budget", "5m"], "error: --budget must be a whole number of seconds, got '5m'"),
        (["--frobnicate"], "error: unknown argument: --frobnicate (see --help)"),
        (["--only"], "error: --only needs a value"),
    ]:
        proc = check("--dry-run", *args)
        assert proc.returncode == 2 and proc.stderr.strip() == message and proc.stdout == ""
    proc = check("--help")
    assert proc.returncode == 0 and "--only PARTS" in proc.stdout and "set -uo" not in proc.stdout


# ------------------------------------------------------------------------------------------- install


def write_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel: module ``name`` with VERSION, and its dist-info."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n" + f"Name: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for arcname, text in files.items():
            z.writestr(arcname, text)
    return path


@pytest.mark.slow
def test_offline_install_into_a_scratch_venv_keeps_torch(tmp_path: Path):
    """--only install with this project's interpreter as the 'image': a fresh venv that sees its packages
    (torch among them) gets what the wheelhouse adds, with --no-index; a stale wheelhouse is refused; a
    dependency that would replace torch fails the install and torch stays."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # A wheelhouse whose requirements are not pyproject's is refused before anything is installed.
    (wheels / "requirements.txt").write_text("gpucheck_probe==1.0\n")
    venv, out = tmp_path / "venv", tmp_path / "out"
    env = dict(PYTHON=str(python), WHEELHOUSE=str(wheels), VENV=str(venv), OUT=str(tmp_path / "stale"))
    proc = check("--only", "install", **env)
    assert proc.returncode == 1 and not venv.exists()
    assert (tmp_path / "stale" / "parts.tsv").read_text().split("\t")[3].strip() == (
        f"{wheels} is stale (pyproject.toml's requirements changed): rebuild it with benchmarks/gpu_wheels.sh")

    # A copy of the check whose pyproject.toml gained a dependency that only the wheelhouse has; the rest
    # of the requirements are present in the 'image'.
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("gpu_check.sh", "gpu_check.py"):
        shutil.copy(ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert pyproject.count("dependencies = [\n") == 1
    (repo / "pyproject.toml").write_text(pyproject.replace("dependencies = [\n", 'dependencies = [\n  "gpucheck_probe==1.0",\n'))
    write_wheel(wheels, "gpucheck_probe", "1.0", requires=("torch", "PyYAML>=6"))
    reqs = subprocess.run([sys.executable, str(repo / "benchmarks" / "gpu_check.py"), "requirements"],
                          capture_output=True, text=True, check=True).stdout
    assert reqs.splitlines()[0] == "gpucheck_probe==1.0"
    (wheels / "requirements.txt").write_text(reqs)
    env["OUT"] = str(out)
    proc = check("--only", "install", script=repo / "benchmarks" / "gpu_check.sh", **env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import gpucheck_probe, torch; "
                            "print(gpucheck_probe.VERSION, torch.__version__, torch.__file__)"],
                           capture_output=True, text=True, check=True)
    version, torch_version, torch_file = probe.stdout.split()
    assert version == "1.0" and torch_version == torch.__version__
    assert not torch_file.startswith(str(venv))  # the image's torch, not a copy
    [(name, rc, _, note)] = [line.split("\t") for line in (out / "parts.tsv").read_text().splitlines()]
    assert (name, rc, note) == ("install", "0", f"torch {torch.__version__} unchanged")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    assert (out / "environment.txt").read_text().startswith(f"{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); Python ")

    # A dependency that wants another torch, which the wheelhouse has: pip refuses (the constraint pins
    # the image's torch), torch stays.
    write_wheel(wheels, "gpucheck_probe", "2.0", requires=("torch==0.0.1",))
    write_wheel(wheels, "torch", "0.0.1")
    (repo / "pyproject.toml").write_text(pyproject.replace("dependencies = [\n", 'dependencies = [\n  "gpucheck_probe>=2",\n'))
    (wheels / "requirements.txt").write_text("gpucheck_probe>=2\n" + reqs.split("\n", 1)[1])
    proc = check("--only", "install", script=repo / "benchmarks" / "gpu_check.sh",
                 **{**env, "OUT": str(tmp_path / "out2"), "VENV": str(tmp_path / "venv2")})
    assert proc.returncode == 1
    [(name, rc, _, note)] = [line.split("\t") for line in (tmp_path / "out2" / "parts.tsv").read_text().splitlines()]
    assert name == "install" and rc != "0" and note == f"torch {torch.__version__} unchanged"
    assert "FAILED: install" in proc.stdout.splitlines()[-1]


def test_install_without_a_wheelhouse_says_how_to_make_one(tmp_path: Path):
    python = ROOT / ".venv" / "bin" / "python"
    out = tmp_path / "out"
    proc = check("--only", "install", PYTHON=str(python if python.exists() else sys.executable),
                 WHEELHOUSE=str(tmp_path / "none"), VENV=str(tmp_path / "venv"), OUT=str(out))
    assert proc.returncode == 1
    note = (out / "parts.tsv").read_text().split("\t")[3].strip()
    assert note == (f"no {tmp_path / 'none'}/requirements.txt: run benchmarks/gpu_wheels.sh where PyPI is reachable "
                    f"and copy {tmp_path / 'none'} here")
    assert not (tmp_path / "venv").exists()


# ------------------------------------------------------------------------------------------- wheelhouse


def test_requirements_are_pyproject_without_torch():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = [r for r in project["dependencies"] if not r.startswith("torch")] + ["pytest>=8"]
    assert gpu_check.project_requirements() == expected
    assert "torch" not in {gpu_check.requirement_name(r) for r in expected}


def test_download_requirements_replace_deepspeed_by_its_dependencies(tmp_path: Path):
    # DeepSpeed's real metadata (from the installed distribution) in a wheel.
    wheel = tmp_path / "deepspeed-0.19.8-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("deepspeed-0.19.8.dist-info/METADATA", md.distribution("deepspeed").read_text("METADATA"))
    reqs = gpu_check.download_requirements(wheel)
    names = [gpu_check.requirement_name(r) for r in reqs]
    assert "torch" not in names and "deepspeed" not in names
    assert {"einops", "hjson", "msgpack", "ninja", "psutil", "py-cpuinfo", "pydantic", "transformers", "datasets",
            "wandb", "mwparserfromhell", "pytest"} <= set(names)
    assert "comet-ml" not in names and "sphinx" not in names  # extras stay out
    assert len(names) == len(reqs)


def test_prune_normalises_names(tmp_path: Path):
    for f in ("PyYAML-6.0.4-cp312-cp312-manylinux2014_x86_64.whl", "typing_extensions-4.16.0-py3-none-any.whl",
              "pandas-3.1.1-cp312-cp312-manylinux_2_28_x86_64.whl", "requirements.txt"):
        (tmp_path / f).write_bytes(b"")
    removed = gpu_check.prune(tmp_path, ["pyyaml", "typing-extensions", "numpy"])
    assert removed == ["PyYAML-6.0.4-cp312-cp312-manylinux2014_x86_64.whl", "typing_extensions-4.16.0-py3-none-any.whl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pandas-3.1.1-cp312-cp312-manylinux_2_28_x86_64.whl",
                                                          "requirements.txt"]


# ------------------------------------------------------------------------------------------- benchmark and summary

TINY = ["--layers", "2", "--hidden", "64", "--heads", "4", "--intermediate", "128", "--vocab", "1000",
        "--entity-vocab", "500", "--entity-emb", "16", "--seq", "64", "--entities", "8", "--mention-len", "4",
        "--batch", "2", "--steps", "2", "--threads", "1", "--peak-tflops", "0.5"]


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_model.py"), *TINY, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_bench_model_json_on_the_cpu(bench_json: Path):
    report = json.loads(bench_json.read_text())
    assert report["shape"]["hidden"] == 64 and report["dtype"] == "fp32" and report["steps"] == 2
    ours, hf = report["models"]["mluke"], report["models"]["hf"]
    assert ours["eval_loss"] == pytest.approx(hf["eval_loss"], abs=1e-4)  # same weights, same objective
    for r in (ours, hf):
        assert r["tokens_per_s"] == pytest.approx(2 * 64 / r["seconds_per_step"])
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * report["flops_per_token"] / 0.5e12)
        assert r["host_syncs_per_step"] is None and r["attention_kernels"] == []  # CUDA-only figures
    assert ours["attention"] == "cpu-dropout"  # training with attention dropout on a CPU: our own path
    assert hf["attention"] == "eager"  # LukeForMaskedLM's own matmul + softmax


@pytest.mark.parametrize(
    "ops, expected",
    [
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention",
          "void pytorch_flash::flash_fwd_kernel<...>"], "flash"),
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_efficient_attention",
          "fmha_cutlassF_bf16_aligned_64x64_rf_sm80"], "efficient"),
        (["aten::_scaled_dot_product_cudnn_attention"], "cudnn"),
        (["flex_attention", "triton_tem_fused_0"], "flex"),
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_attention_math", "aten::softmax"], "math"),
        (["_DropoutAttentionCPU", "aten::bmm", "aten::_softmax", "aten::random_"], "cpu-dropout"),
        (["aten::bmm", "aten::softmax", "aten::matmul"], "eager"),
    ],
)
def test_attention_classified_from_op_names(ops: list[str], expected: str):
    assert load_bench_model().classify_attention(ops) == expected


def test_summary_table(tmp_path: Path, bench_json: Path):
    tests = tmp_path / "test_three.py"
    tests.write_text("import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    assert 0\n\n"
                     "@pytest.mark.skip(reason='x')\ndef test_c():\n    pass\n")
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run([sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider", "--junitxml",
                    str(run / "tests.xml")], cwd=tmp_path, capture_output=True, timeout=120)
    (run / "bench_mluke-large.json").write_text(bench_json.read_text())
    (run / "parts.tsv").write_text("install\t0\t31\ttorch 2.11.0 unchanged\ntests\t1\t140\t\n"
                                   "mluke-base\t124\t80\t\nmluke-large\t0\t75\t\n")
    (run / "environment.txt").write_text("NVIDIA H200; torch 2.11.0\n")
    lines = gpu_check.summary(run)
    report = json.loads(bench_json.read_text())
    ours = report["models"]["mluke"]
    assert lines[0] == "NVIDIA H200; torch 2.11.0"
    assert lines[2].split() == ["part", "s", "result"]
    assert lines[4] == "install      31   ok; torch 2.11.0 unchanged"
    assert lines[5] == "tests        140  FAILED (exit 1): 1 passed, 1 failed, 1 skipped (test_b)"
    assert lines[6] == "mluke-base   80   TIMED OUT"
    assert lines[7] == "mluke-large  75   ok"
    assert lines[9].split()[:3] == ["shape", "model", "tokens/s"]
    base_row, ours_row, hf_row = lines[11:14]
    assert base_row.split() == ["mluke-base", "-", "no", "result", "(TIMED", "OUT)"]
    assert ours_row.startswith("mluke-large  pretrain.model (ours)")
    assert f"{ours['tokens_per_s']:,.0f}" in ours_row and f"{ours['mfu']:.1%}" in ours_row
    assert ours_row.split()[-3:] == ["n/a", ours["attention"], f"{ours['eval_loss']:.4f}"]
    assert hf_row.split()[-2:] == ["eager", f"{report['models']['hf']['eval_loss']:.4f}"]
    assert lines[14] == f"mluke-large stage 2, ours: {ours['mfu']:.1%} MFU (goal >= 45%: NOT met)"
    assert lines[-1] == "total 326 s; FAILED: tests, mluke-base"

    # pytest killed at the part's time limit writes no XML: its -v lines so far are counted instead.
    (run / "tests.xml").unlink()
    (run / "tests.log").write_text(
        "tests/test_gpu.py::test_stage1_zero3_bf16_checkpointing_on_the_gpu PASSED                 [ 25%]\n"
        "tests/test_gpu.py::test_stage2_zero1_stopped_and_resumed_gives_the_same_losses FAILED     [ 50%]\n"
        "tests/test_gpu.py::test_fp16_three_steps ERROR                                           [ 75%]\n"
        "some other output PASSED\n"
    )
    (run / "parts.tsv").write_text("tests\t124\t210\t\n")
    assert gpu_check.summary(run)[4] == ("tests  210  TIMED OUT: 1 passed, 2 failed, 0 skipped "
                                         "(test_stage2_zero1_stopped_and_resumed_gives_the_same_losses, "
                                         "test_fp16_three_steps)")


def test_wheels_script_needs_a_python_with_torch(tmp_path: Path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_wheels.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "BUILD_PYTHON": "/bin/false",
                                                      "DOWNLOAD_PYTHON": "/bin/false", "WHEELHOUSE": str(tmp_path / "w")})
    assert proc.returncode == 2 and proc.stderr.strip() == "error: /bin/false cannot import torch (set BUILD_PYTHON)"
    assert not (tmp_path / "w").exists() and not (tmp_path / "w.partial").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_nothing_passes_for_a_gpu_check(tmp_path: Path):
    """All-skipped GPU tests would 'pass': the check reports the missing device instead, and fails."""
    python = ROOT / ".venv" / "bin" / "python"
    proc = check("--skip-install", PYTHON=str(python if python.exists() else sys.executable), OUT=str(tmp_path))
    assert proc.returncode == 1
    rows = [line.split("\t") for line in (tmp_path / "parts.tsv").read_text().splitlines()]
    assert rows == [[p, "2", "0", "not run: torch sees no CUDA device"] for p in ("tests", "mluke-base", "mluke-large")]
    assert proc.stdout.splitlines()[-1] == "total 0 s; FAILED: tests, mluke-base, mluke-large"
