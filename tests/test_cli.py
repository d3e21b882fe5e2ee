import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True)


def test_data_prep_help_lists_every_stage():
    r = run("-m", "data_prep", "--help")
    assert r.returncode == 0
    for name in ("extract", "interwiki", "entity-vocab", "train-spm", "shards", "run"):
        assert name in r.stdout


def test_unknown_subcommand_is_an_error():
    r = run("-m", "data_prep", "no-such-stage")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr


def test_pretrain_strips_deepspeed_local_rank():
    from pretrain.__main__ import pop_local_rank

    assert pop_local_rank(["--local_rank=1", "train", "--config", "x.yaml"]) == ["train", "--config", "x.yaml"]
    assert pop_local_rank(["--local_rank", "0", "train"]) == ["train"]
