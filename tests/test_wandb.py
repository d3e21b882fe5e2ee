"""W&B never stops training: the start-up check (no key, unreachable server -> offline; online_required
-> one-line error) and W&B failures mid-run (init or log raising -> one line, metrics.jsonl goes on).

No network: the "server" is a socket on localhost, open or closed; W&B runs are real offline runs.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from data_prep.common.errors import InputError
from pretrain.config import WandbConfig, load_config
from pretrain.metrics import MetricsLog, resolve_wandb_mode, start_wandb, wandb_base_url

KEY = "0123456789abcdef0123456789abcdef01234567"  # the form of a W&B key; never sent anywhere


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An environment where W&B finds no key, no netrc and no settings (and the mode comes from the config)."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connections are refused


def stderr_lines(capsys) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.strip()]


def test_no_api_key_falls_back_to_offline_with_one_line(no_credentials, capsys):
    out = no_credentials / "run"
    assert resolve_wandb_mode(WandbConfig(mode="online"), out) == "offline"
    assert stderr_lines(capsys) == [
        f"wandb: no W&B API key (WANDB_API_KEY, ~/.netrc from `wandb login`); logging offline to {out / 'wandb'} "
        "(upload later with `wandb sync`)"
    ]


def test_unreachable_server_falls_back_to_offline_within_seconds(no_credentials, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    start = time.perf_counter()
    assert resolve_wandb_mode(WandbConfig(mode="online"), no_credentials) == "offline"
    assert time.perf_counter() - start < 3.5
    [line] = stderr_lines(capsys)
    assert line.startswith(f"wandb: W&B server {url} not reachable within 3s; logging offline to ")


def test_online_required_fails_with_one_line(no_credentials, monkeypatch):
    with pytest.raises(InputError) as e:
        resolve_wandb_mode(WandbConfig(mode="online_required"), no_credentials)
    assert str(e.value) == "wandb.mode online_required: no W&B API key (WANDB_API_KEY, ~/.netrc from `wandb login`)"
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(InputError, match=r"^wandb.mode online_required: W&B server http://127.0.0.1:\d+ not reachable within 3s$"):
        resolve_wandb_mode(WandbConfig(mode="online_required"), no_credentials)


def test_netrc_key_and_settings_file_server_stay_online(no_credentials, monkeypatch, capsys):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        (no_credentials / "wandb-config").mkdir()
        (no_credentials / "wandb-config" / "settings").write_text(f"[default]\nbase_url = {url}\n")
        assert wandb_base_url() == url
        (no_credentials / "no-netrc").write_text(f"machine 127.0.0.1\n  login user\n  password {KEY}\n")
        for mode in ("online", "online_required"):
            assert resolve_wandb_mode(WandbConfig(mode=mode), no_credentials) == "online"
    assert stderr_lines(capsys) == []


def test_environment_mode_wins_and_needs_no_check(no_credentials, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode(WandbConfig(mode="online_required"), no_credentials) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(WandbConfig(mode="online"), no_credentials) == "disabled"
    assert stderr_lines(capsys) == []


def test_config_accepts_online_required(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "data.shards=x", "wandb.mode=online_required"])
    assert cfg.wandb.mode == "online_required"
    with pytest.raises(InputError, match="wandb.mode must be one of online, online_required, offline, disabled"):
        load_config(None, [f"output_dir={tmp_path}", "data.shards=x", "wandb.mode=sometimes"])


def test_offline_fallback_writes_the_run_under_out_wandb(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # the resolved mode wins over the environment in wandb.init
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = no_credentials / "run"
    out.mkdir()
    mode = resolve_wandb_mode(WandbConfig(mode="online", project="t"), out)
    run = start_wandb({"x": 1}, WandbConfig(mode="online", project="t"), out, "fallback1", mode)
    assert run is not None
    run.finish()
    assert [p.name.split("-")[-1] for p in (out / "wandb").glob("offline-run-*")] == ["fallback1"]


def test_wandb_failures_mid_run_never_stop_the_metrics(no_credentials, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = no_credentials / "run"
    out.mkdir()
    wcfg = WandbConfig(mode="offline", project="t")
    # wandb.init raising (here: a run id W&B refuses) -> no run, one line
    assert start_wandb({}, wcfg, out, "bad/id", "offline") is None
    [line] = stderr_lines(capsys)
    assert line.startswith("wandb: init failed (UsageError: ") and line.endswith(f"metrics in {out / 'metrics.jsonl'}")
    # run.log raising (a run finished under our feet) -> one line, W&B left alone, every record in metrics.jsonl
    run = start_wandb({}, wcfg, out, "finished1", "offline")
    run.finish()
    log = MetricsLog(out / "metrics.jsonl", run)
    for step in (1, 2, 3):
        log.log({"step": step, "loss": 1.0 / step, "mfu": None})
    log.close()
    assert log.run is None
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    [line] = stderr_lines(capsys)
    assert line.startswith("wandb: log failed at step 1 (UsageError: Run (finished1) is finished.")
    assert line.endswith(f"W&B is off for the rest of the run, {out / 'metrics.jsonl'} goes on")


def test_prepare_checks_wandb_before_the_process_group(no_credentials, tmp_path_factory):
    """``prepare`` (before any process group) resolves rank 0's mode; other ranks never talk to W&B. From
    the command line, online_required without credentials is one line and exit status 2."""
    import os
    import subprocess
    import sys

    from shard_fixtures import write_shards

    from pretrain.train import DistEnv, prepare

    shards = write_shards(tmp_path_factory.mktemp("wandb") / "shards")
    small = ["model.init_from=null", "model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
             "model.intermediate_size=64", "model.entity_emb_size=16", "train.global_batch_size=4", "train.micro_batch_size=2"]
    args = [f"output_dir={no_credentials / 'out'}", f"data.shards={shards}", *small]
    assert prepare(load_config(None, [*args, "wandb.mode=online"]), DistEnv(0, 0, 1)).wandb_mode == "offline"
    required = load_config(None, [*args, "wandb.mode=online_required"])
    assert prepare(required, DistEnv(1, 1, 2)).wandb_mode == "disabled"
    with pytest.raises(InputError, match="^wandb.mode online_required: no W&B API key"):
        prepare(required, DistEnv(0, 0, 2))

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(no_credentials / "home"), NETRC=str(no_credentials / "no-netrc"), DS_ACCELERATOR="cpu")
    root = Path(__file__).resolve().parents[1]
    config = no_credentials / "c.yaml"
    config.write_text("wandb:\n  mode: online_required\n")
    r = subprocess.run([sys.executable, "-m", "pretrain", "train", "--config", str(config), *args], cwd=root,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: wandb.mode online_required: no W&B API key (WANDB_API_KEY, ~/.netrc from `wandb login`)"
    ]
    assert not (no_credentials / "out").exists()  # nothing started
