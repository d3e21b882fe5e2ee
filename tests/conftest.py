import os

import pytest

# Tests never talk to W&B or a GPU unless they say so.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


SHM = "/dev/shm"
_shm_at_start: set[str] = set()


def _deepspeed_shm() -> set[str]:
    try:
        return {n for n in os.listdir(SHM) if n.startswith(f"deepspeed_allreduce_buffer_{os.getuid()}_")}
    except OSError:
        return set()


def pytest_sessionstart(session):
    _shm_at_start.update(_deepspeed_shm())


def pytest_sessionfinish(session, exitstatus):
    """Process groups started inside the test process (not through the trainer, which unlinks its own)
    leave DeepSpeed's CPU collective segments in /dev/shm, 66 MB each: remove those this session made."""
    for name in _deepspeed_shm() - _shm_at_start:
        try:
            os.unlink(os.path.join(SHM, name))
        except OSError:
            pass


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory):
    """Shards of the bundled sample (data_prep/sample), built once per session."""
    from shard_fixtures import sample_shards

    return sample_shards(tmp_path_factory.mktemp("sample_data"))
