"""Launch scripts: syntax, device detection, the exact deepspeed / srun / sbatch command lines, the SLURM
hostfile, and .deepspeed_env.

Cluster tools are stubs written here onto PATH (nvidia-smi listing N GPUs, scontrol expanding a node
list, srun running its command once per node with SLURM_NODEID set, sbatch recording its arguments);
DRY_RUN=1 makes the scripts print the command they would exec. The printed argument lists are also
handed to DeepSpeed 0.19.8's own launcher parser and hostfile reader, so a flag or file format it does
not know fails here. Two slow tests run for real: the 24-language data-prep array on the bundled sample
(7 languages), and a 2-rank CPU training through slurm_train.sbatch -> srun -> train_multi_node.sh ->
deepspeed --no_ssh.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from shard_fixtures import write_shards

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
MINE = ["common.sh", "train_single_node.sh", "train_multi_node.sh", "slurm_train.sbatch", "slurm_data_prep.sbatch"]
# The GPU node check and its wheelhouse builder (benchmarks/), held to the same lint.
GPU_SCRIPTS = [ROOT / "benchmarks" / "gpu_check.sh", ROOT / "benchmarks" / "gpu_wheels.sh"]
CONFIG = "configs/train/mluke_base_stage1.yaml"
CORES = len(os.sched_getaffinity(0))
# Variables the scripts read or default: the tests start from an environment without them.
SCRUB = (
    "DS_ACCELERATOR", "NUM_GPUS", "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "NO_SSH",
    "HOSTFILE", "OMP_NUM_THREADS", "NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "TOKENIZERS_PARALLELISM",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTHONUNBUFFERED", "PYTHONFAULTHANDLER", "GPUS_PER_NODE", "PHASE", "DRY_RUN", "DS_LAUNCHER", "SSH_PORT",
    "DS_ENV_EXTRA", "DS_ENV_SECRETS", "SBATCH_EXTRA", "MAX_PARALLEL", "MLUKE_ROOT", "PYTHON",
)


def write_stub(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def nvidia_smi(bin_dir: Path, gpus: int) -> None:
    lines = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:04d})'\n" for i in range(gpus))
    write_stub(bin_dir, "nvidia-smi", f'[[ "$1" == -L ]] || exit 9\n{lines}')


def run(script: str, *args: str, bin_dir: Path, cwd: Path = ROOT, dry: bool = True, **env: str):
    e = {k: v for k, v in os.environ.items() if k not in SCRUB and not k.startswith("SLURM_")}
    e["PATH"] = f"{bin_dir}:{e['PATH']}"
    if dry:
        e["DRY_RUN"] = "1"
    e.update(env)
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=120
    )


def commands(stdout: str) -> list[tuple[dict[str, str], list[str]]]:
    """The DRY_RUN lines ("+ NAME=value ... argv") as (environment, argv)."""
    out = []
    for line in stdout.splitlines():
        if not line.startswith("+ "):
            continue
        tokens = shlex.split(line[2:])
        env = {}
        while tokens and "=" in tokens[0] and tokens[0].split("=", 1)[0].isidentifier():
            k, v = tokens.pop(0).split("=", 1)
            env[k] = v
        out.append((env, tokens))
    return out


def launcher_args(argv: list[str]) -> list[str]:
    """argv = PYTHON -u -m deepspeed.launcher.runner ARGS...: check the interpreter part, return ARGS."""
    python = ROOT / ".venv" / "bin" / "python"
    assert argv[:4] == [str(python) if python.exists() else "python3", "-u", "-m", "deepspeed.launcher.runner"]
    return argv[4:]


def ds_parse(args: list[str]):
    from deepspeed.launcher.runner import parse_args

    return parse_args(args)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return tmp_path / "bin"


# ------------------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize("path", sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch")) + GPU_SCRIPTS,
                         ids=lambda p: p.name)
def test_bash_syntax(path: Path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None and not (ROOT / ".venv/bin/shellcheck").exists(),
                    reason="shellcheck not installed")
def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or str(ROOT / ".venv/bin/shellcheck")
    files = [f"launch/{name}" for name in MINE] + [str(p.relative_to(ROOT)) for p in GPU_SCRIPTS]
    proc = subprocess.run([exe, "-x", "-s", "bash", *files], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# -------------------------------------------------------------------------------------- single node


def test_single_node_uses_every_gpu(bin_dir: Path):
    nvidia_smi(bin_dir, 4)
    proc = run("train_single_node.sh", CONFIG, "train.lr=2e-4", "--dry-run", bin_dir=bin_dir)
    assert proc.returncode == 0, proc.stderr
    [(env, argv)] = commands(proc.stdout)
    args = launcher_args(argv)
    assert args == ["--num_gpus", "4", "--master_port", "29500", "--module", "pretrain", "train",
                    "--config", CONFIG, "train.lr=2e-4", "--dry-run"]
    assert "DS_ACCELERATOR" not in env
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and env["NCCL_DEBUG"] == "WARN"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["OMP_NUM_THREADS"] == str(max(1, CORES // 4))
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["PYTHONFAULTHANDLER"] == "1"
    a = ds_parse(args)  # DeepSpeed's own parser takes it as we mean it
    assert (a.num_gpus, a.master_port, a.module, a.user_script) == (4, 29500, True, "pretrain")
    assert a.user_args == ["train", "--config", CONFIG, "train.lr=2e-4", "--dry-run"]


def test_single_node_respects_visible_devices_and_caller_values(bin_dir: Path):
    nvidia_smi(bin_dir, 4)
    proc = run("train_single_node.sh", CONFIG, bin_dir=bin_dir, CUDA_VISIBLE_DEVICES="1,3", NCCL_DEBUG="INFO",
               MASTER_PORT="29999")
    [(env, argv)] = commands(proc.stdout)
    args = launcher_args(argv)
    assert args[:4] == ["--num_gpus", "2", "--master_port", "29999"]
    assert env["NCCL_DEBUG"] == "INFO"  # the caller's value wins over the default


def test_single_node_more_ranks_than_gpus_is_an_error(bin_dir: Path):
    nvidia_smi(bin_dir, 2)
    proc = run("train_single_node.sh", CONFIG, bin_dir=bin_dir, NUM_GPUS="8")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "8 rank(s) asked for (NUM_GPUS, or this node's slots in the hostfile) but only 2 GPU(s)" in proc.stderr


def test_single_node_cpu_only(bin_dir: Path):
    nvidia_smi(bin_dir, 0)  # nvidia-smi present, no GPU (and none is ever asked of torch)
    proc = run("train_single_node.sh", "configs/train/debug.yaml", bin_dir=bin_dir)
    assert proc.returncode == 0, proc.stderr
    [(env, argv)] = commands(proc.stdout)
    ranks = 2 if CORES >= 2 else 1
    assert env["DS_ACCELERATOR"] == "cpu"
    assert env["OMP_NUM_THREADS"] == str(max(1, CORES // ranks))
    assert "NCCL_DEBUG" not in env and "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in env
    assert "PYTORCH_CUDA_ALLOC_CONF" not in env
    assert launcher_args(argv)[:2] == ["--num_gpus", str(ranks)]
    assert "no GPU found" in proc.stderr

    # DS_ACCELERATOR=cpu forces CPU ranks where GPUs exist; NUM_GPUS sets how many.
    nvidia_smi(bin_dir, 4)
    proc = run("train_single_node.sh", "configs/train/debug.yaml", bin_dir=bin_dir, DS_ACCELERATOR="cpu", NUM_GPUS="3")
    [(env, argv)] = commands(proc.stdout)
    assert env["DS_ACCELERATOR"] == "cpu" and launcher_args(argv)[:2] == ["--num_gpus", "3"]
    assert env["OMP_NUM_THREADS"] == str(max(1, CORES // 3))


@pytest.mark.parametrize("script", ["train_single_node.sh", "train_multi_node.sh"])
def test_missing_config_or_usage(script: str, bin_dir: Path):
    nvidia_smi(bin_dir, 1)
    proc = run(script, "configs/train/nope.yaml", bin_dir=bin_dir)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: configs/train/nope.yaml: config file not found"
    proc = run(script, bin_dir=bin_dir)
    assert proc.returncode == 2 and "usage:" in proc.stderr


# --------------------------------------------------------------------------------------- multi node

HOSTFILE = "# two nodes\nnode-a slots=4\n\nnode-b slots=2\n"


def test_multi_node_over_ssh(tmp_path: Path, bin_dir: Path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(HOSTFILE)
    proc = run("train_multi_node.sh", CONFIG, "train.stop_at_step=10", bin_dir=bin_dir, HOSTFILE=str(hostfile))
    assert proc.returncode == 0, proc.stderr
    [(env, argv)] = commands(proc.stdout)
    args = launcher_args(argv)
    # The hostfile's slots rule (4 + 2 ranks): no --num_gpus, which would force one count on all hosts.
    assert args == ["--hostfile", str(hostfile), "--master_addr", "node-a", "--master_port", "29500",
                    "--launcher", "pdsh", "--module", "pretrain", "train", "--config", CONFIG, "train.stop_at_step=10"]
    # The launching machine may be a GPU-less login node: no CPU fallback decided from there.
    assert "DS_ACCELERATOR" not in env and env["NCCL_DEBUG"] == "WARN"
    a = ds_parse(args)
    assert (a.hostfile, a.master_addr, a.launcher, a.num_gpus, a.no_ssh) == (str(hostfile), "node-a", "pdsh", -1, False)
    from deepspeed.launcher.runner import fetch_hostfile

    assert dict(fetch_hostfile(str(hostfile))) == {"node-a": 4, "node-b": 2}

    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(hostfile), NUM_GPUS="2", SSH_PORT="2222",
               DS_LAUNCHER="openmpi")
    args = launcher_args(commands(proc.stdout)[0][1])
    assert args[6:12] == ["--launcher", "openmpi", "--num_gpus", "2", "--ssh_port", "2222"]


def test_multi_node_one_node_without_ssh(tmp_path: Path, bin_dir: Path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(HOSTFILE)
    nvidia_smi(bin_dir, 2)
    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(hostfile), NODE_RANK="1",
               MASTER_ADDR="10.0.0.1")
    assert proc.returncode == 0, proc.stderr
    [(env, argv)] = commands(proc.stdout)
    args = launcher_args(argv)
    assert args == ["--hostfile", str(hostfile), "--master_addr", "10.0.0.1", "--master_port", "29500",
                    "--no_ssh", "--node_rank", "1", "--module", "pretrain", "train", "--config", CONFIG]
    assert env["OMP_NUM_THREADS"] == str(max(1, CORES // 2))  # node-b runs 2 ranks
    a = ds_parse(args)
    assert (a.no_ssh, a.node_rank, a.master_addr) == (True, 1, "10.0.0.1")

    # node-a has 4 slots: on a machine with 2 GPUs that is an error on the spot, not a crash later.
    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(hostfile), NODE_RANK="0")
    assert proc.returncode == 2 and "4 rank(s) asked for" in proc.stderr

    # NO_SSH=1 takes the node rank from SLURM_NODEID; a rank outside the hostfile is refused.
    nvidia_smi(bin_dir, 4)
    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(hostfile), NO_SSH="1", SLURM_NODEID="0")
    assert launcher_args(commands(proc.stdout)[0][1])[6:9] == ["--no_ssh", "--node_rank", "0"]
    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(hostfile), NODE_RANK="2")
    assert proc.returncode == 2 and f"NODE_RANK=2 is not a node of {hostfile} (0..1)" in proc.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("node-a slots=4\nnode-a slots=4\n", "node-a is listed twice"),
        ("node-a 4\n", "line for 'node-a' is not 'HOST slots=N'"),
        ("# nothing\n\n", "no hosts listed"),
    ],
)
def test_bad_hostfile(tmp_path: Path, bin_dir: Path, text: str, message: str):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(text)
    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(hostfile))
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {hostfile}: {message}"
    proc = run("train_multi_node.sh", CONFIG, bin_dir=bin_dir, HOSTFILE=str(tmp_path / "missing"))
    assert proc.returncode == 2 and "hostfile not found" in proc.stderr


def test_deepspeed_env_file(tmp_path: Path, bin_dir: Path):
    """Not a dry run: .deepspeed_env is written in the working directory, then the launcher is exec'd
    (here a stub interpreter that records its argv). DeepSpeed's reader takes every line."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(HOSTFILE)
    record = tmp_path / "argv.json"
    stub_python = write_stub(bin_dir, "python-stub", f"printf '%s\\n' \"$@\" > {record}\n")
    (tmp_path / ".deepspeed_env").write_text("STALE=1\n")
    proc = run(
        "train_multi_node.sh", str(ROOT / CONFIG), bin_dir=bin_dir, cwd=tmp_path, dry=False, HOSTFILE=str(hostfile),
        PYTHON=str(stub_python), WANDB_PROJECT="mluke", WANDB_MODE="offline", WANDB_API_KEY="secret",
        HF_HOME="/shared/hf cache", CUDA_VISIBLE_DEVICES="0", MY_SETTING="x", DS_ENV_EXTRA="MY_",
        PYTHONPATH="/opt/extra",
    )
    assert proc.returncode == 0, proc.stderr
    argv = record.read_text().splitlines()
    assert argv[:3] == ["-u", "-m", "deepspeed.launcher.runner"] and argv[-3:] == ["train", "--config", str(ROOT / CONFIG)]
    env_file = tmp_path / ".deepspeed_env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = env_file.read_text().splitlines()
    assert all(line and "=" in line and not line.startswith("#") for line in lines)
    values = dict(line.split("=", 1) for line in lines)
    assert values["WANDB_PROJECT"] == "mluke" and values["WANDB_MODE"] == "offline"
    assert values["HF_HOME"] == "/shared/hf cache" and values["MY_SETTING"] == "x"
    assert values["PYTHONPATH"] == "/opt/extra" and values["NCCL_DEBUG"] == "WARN"
    assert values["TOKENIZERS_PARALLELISM"] == "false" and values["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    for absent in ("WANDB_API_KEY", "CUDA_VISIBLE_DEVICES", "STALE", "PATH", "HOME"):
        assert absent not in values

    # What DeepSpeed's pdsh runner does with the file: one export per line, values quoted as needed.
    from deepspeed.launcher.multinode_runner import PDSHRunner

    runner = PDSHRunner(ds_parse(["--hostfile", str(hostfile), "x.py"]), "e30=")
    for line in env_file.read_text().splitlines(keepends=True):
        key, val = line.split("=", maxsplit=1)
        runner.add_export(key, val)
    assert runner.exports["HF_HOME"] == '"/shared/hf cache"' and runner.exports["WANDB_PROJECT"] == "mluke"

    # DS_ENV_SECRETS=1 lets the API key travel too.
    proc = run("train_multi_node.sh", str(ROOT / CONFIG), bin_dir=bin_dir, cwd=tmp_path, dry=False,
               HOSTFILE=str(hostfile), PYTHON=str(stub_python), WANDB_API_KEY="secret", DS_ENV_SECRETS="1")
    assert "WANDB_API_KEY=secret" in env_file.read_text().splitlines()


# -------------------------------------------------------------------------------------------- SLURM


def slurm_stubs(bin_dir: Path, log: Path) -> None:
    """scontrol expands gpu-[07-09]; srun logs its options, then runs the command once per node."""
    write_stub(bin_dir, "scontrol", (
        '[[ "$1 $2" == "show hostnames" ]] || exit 3\n'
        'case "$3" in\n'
        '  "gpu-[07-09]") printf "gpu-07\\ngpu-08\\ngpu-09\\n" ;;\n'
        '  *) echo "$3" ;;\n'
        "esac\n"
    ))
    write_stub(bin_dir, "srun", (
        f'echo "srun $*" >> {log}\n'
        "n=1\n"
        'while [[ $# -gt 0 && "$1" == -* ]]; do [[ "$1" == --ntasks=* ]] && n=${1#--ntasks=}; shift; done\n'
        'for ((i = 0; i < n; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" || exit $?; done\n'
    ))


def test_slurm_hostfile_and_node_commands(tmp_path: Path, bin_dir: Path):
    log = tmp_path / "srun.log"
    slurm_stubs(bin_dir, log)
    nvidia_smi(bin_dir, 4)
    hostfile = tmp_path / "slurm" / "hostfile"
    proc = run(
        "slurm_train.sbatch", CONFIG, "train.micro_batch_size=16", bin_dir=bin_dir, HOSTFILE=str(hostfile),
        SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu-[07-09]", SLURM_GPUS_PER_NODE="h100:4", SLURM_CPUS_PER_TASK="32",
    )
    assert proc.returncode == 0, proc.stderr
    assert hostfile.read_text() == "gpu-07 slots=4\ngpu-08 slots=4\ngpu-09 slots=4\n"
    from deepspeed.launcher.runner import fetch_hostfile

    assert dict(fetch_hostfile(str(hostfile))) == {"gpu-07": 4, "gpu-08": 4, "gpu-09": 4}
    [srun] = log.read_text().splitlines()
    assert srun == (f"srun --nodes=3 --ntasks=3 --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=32 env NO_SSH=1 "
                    f"{LAUNCH / 'train_multi_node.sh'} {CONFIG} train.micro_batch_size=16")
    cmds = commands(proc.stdout)
    assert len(cmds) == 3
    port = str(20000 + 4242 % 20000)
    for node, (env, argv) in enumerate(cmds):
        args = launcher_args(argv)
        assert args == ["--hostfile", str(hostfile), "--master_addr", "gpu-07", "--master_port", port, "--no_ssh",
                        "--node_rank", str(node), "--module", "pretrain", "train", "--config", CONFIG,
                        "train.micro_batch_size=16"]
        assert env["OMP_NUM_THREADS"] == str(max(1, CORES // 4)) and "DS_ACCELERATOR" not in env
        a = ds_parse(args)
        assert (a.no_ssh, a.node_rank, a.master_port) == (True, node, int(port))


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"GPUS_PER_NODE": "8", "SLURM_GPUS_PER_NODE": "4"}, "8"),
        ({"SLURM_GPUS_ON_NODE": "2"}, "2"),
        ({"SLURM_GPUS_PER_NODE": "a100:4"}, "4"),
        ({"SLURM_GPUS_PER_NODE": "gpu:a100:4(S:0-1)"}, "4"),
        ({}, "3"),  # nothing from SLURM: nvidia-smi
    ],
)
def test_slurm_gpus_per_node(bin_dir: Path, env: dict[str, str], expected: str):
    nvidia_smi(bin_dir, 3)
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in SCRUB}
    e.update(env, PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", f"source {LAUNCH / 'slurm_train.sbatch'}; slurm_gpus_per_node"],
                          env=e, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == expected, proc.stderr


def test_slurm_train_outside_slurm_is_refused(bin_dir: Path):
    proc = run("slurm_train.sbatch", CONFIG, bin_dir=bin_dir)
    assert proc.returncode != 0 and "submit this script with sbatch" in proc.stderr


@pytest.mark.parametrize("script", ["slurm_train.sbatch", "slurm_data_prep.sbatch"])
def test_sbatch_submitted_outside_the_repository(tmp_path: Path, bin_dir: Path, script: str):
    """SLURM runs a copy of the script: the repository is $SLURM_SUBMIT_DIR, and a wrong one is named."""
    proc = run(script, CONFIG, bin_dir=bin_dir, SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_ID="1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path} is not the repository root: submit from there, or set MLUKE_ROOT"


def sample_languages() -> list[str]:
    from data_prep.pipeline import load_pipeline_config

    return load_pipeline_config(ROOT / "configs/data/sample.yaml").languages


def test_data_prep_submits_array_then_dependent_job(tmp_path: Path, bin_dir: Path):
    log = tmp_path / "sbatch.log"
    write_stub(bin_dir, "sbatch", (
        f'echo "$*" >> {log}\n'
        f'if [[ $(wc -l < {log}) == 1 ]]; then echo "777;cluster-a"; else echo 778; fi\n'
    ))
    n = len(sample_languages())
    proc = run("slurm_data_prep.sbatch", "configs/data/sample.yaml", "workers=3", bin_dir=bin_dir, dry=False,
               MAX_PARALLEL="4", SBATCH_EXTRA="--partition=cpu --account=lab")
    assert proc.returncode == 0, proc.stderr
    script = LAUNCH / "slurm_data_prep.sbatch"
    first, second = log.read_text().splitlines()
    assert first == (f"--parsable --array=0-{n - 1}%4 --job-name=mluke-extract --partition=cpu --account=lab "
                     f"{script} configs/data/sample.yaml workers=3")
    assert second == ("--parsable --dependency=afterok:777 --job-name=mluke-data-finish --export=ALL,PHASE=finish "
                      f"--partition=cpu --account=lab {script} configs/data/sample.yaml workers=3")
    assert "finish: job 778" in proc.stderr


def test_data_prep_array_task_extracts_its_language(bin_dir: Path):
    langs = sample_languages()
    for task in (0, len(langs) - 1):
        proc = run("slurm_data_prep.sbatch", "configs/data/sample.yaml", "limit_pages=5", bin_dir=bin_dir,
                   SLURM_JOB_ID="9", SLURM_ARRAY_TASK_ID=str(task), SLURM_CPUS_PER_TASK="16")
        assert proc.returncode == 0, proc.stderr
        [(env, argv)] = commands(proc.stdout)
        assert argv[1:] == ["-m", "data_prep", "run", "--config", "configs/data/sample.yaml", "--languages",
                            langs[task], "--steps", "extract", "limit_pages=5", "workers=16"]
    proc = run("slurm_data_prep.sbatch", "configs/data/sample.yaml", bin_dir=bin_dir, SLURM_JOB_ID="9",
               SLURM_ARRAY_TASK_ID=str(len(langs)))
    assert proc.returncode == 2
    assert f"lists {len(langs)} languages (use --array=0-{len(langs) - 1})" in proc.stderr

    # The dependent job runs the cross-language steps; a workers= override beats the CPU count.
    proc = run("slurm_data_prep.sbatch", "configs/data/sample.yaml", "workers=2", bin_dir=bin_dir, SLURM_JOB_ID="10",
               PHASE="finish", SLURM_CPUS_PER_TASK="16")
    [(env, argv)] = commands(proc.stdout)
    assert argv[1:] == ["-m", "data_prep", "run", "--config", "configs/data/sample.yaml", "--steps",
                        "interwiki,vocab,spm,shards", "workers=2"]


@pytest.mark.slow
def test_data_prep_array_for_real(tmp_path: Path, bin_dir: Path):
    """Every array task of the bundled sample, then the finishing job: real shards for all languages."""
    langs = sample_languages()
    out = tmp_path / "data"
    for task in range(len(langs)):
        proc = run("slurm_data_prep.sbatch", "configs/data/sample.yaml", f"out_dir={out}", bin_dir=bin_dir, dry=False,
                   SLURM_JOB_ID="20", SLURM_ARRAY_TASK_ID=str(task), SLURM_CPUS_PER_TASK="1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "corpus" / langs[task] / "stats.json").is_file()
    assert sorted(p.name for p in (out / "corpus").iterdir()) == sorted(langs)
    proc = run("slurm_data_prep.sbatch", "configs/data/sample.yaml", f"out_dir={out}", bin_dir=bin_dir, dry=False,
               SLURM_JOB_ID="21", PHASE="finish", SLURM_CPUS_PER_TASK="2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert sorted(manifest["languages"]) == sorted(langs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_slurm_train_for_real_on_cpu(tmp_path: Path, bin_dir: Path):
    """sbatch script -> srun (stub, 1 node) -> train_multi_node.sh -> deepspeed --no_ssh -> 2 gloo ranks."""
    shards = write_shards(tmp_path / "shards")
    log = tmp_path / "srun.log"
    slurm_stubs(bin_dir, log)
    nvidia_smi(bin_dir, 0)
    out = tmp_path / "out"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"output_dir: {out}\n"
        f"data: {{shards: {shards}, seed: 3}}\n"
        "model: {entity_emb_size: 16, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}\n"
        "train: {max_steps: 3, global_batch_size: 8, micro_batch_size: 2, lr: 1.0e-3, warmup_steps: 1, save_every: 2, log_every: 1}\n"
        "deepspeed: {zero_stage: 2, precision: fp32, timeout_s: 120}\n"
        "wandb: {mode: disabled}\n"
    )
    proc = run(
        "slurm_train.sbatch", str(config), bin_dir=bin_dir, dry=False, HOSTFILE=str(tmp_path / "hostfile"),
        SLURM_JOB_ID="31", SLURM_JOB_NODELIST="localhost", GPUS_PER_NODE="2", DS_ACCELERATOR="cpu",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WANDB_MODE="disabled",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "hostfile").read_text() == "localhost slots=2\n"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step000003"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "world size 2" in (out / "train.log").read_text()
