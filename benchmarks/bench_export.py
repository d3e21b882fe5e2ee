"""Export time and peak memory at real model size, next to DeepSpeed's own consolidation.

    python benchmarks/bench_export.py                        # XLM-R base dims, 250,002 words, 100k entities
    python benchmarks/bench_export.py --hidden 256 --layers 4 --entities 20000   # quicker

Builds a real DeepSpeed ZeRO-2 checkpoint (one CPU process, gloo, fp32, one AdamW step so the optimiser
moments exist) of an mLUKE model, a synthetic 250k-piece unigram sentencepiece model and entity vocabulary,
then runs, each in a fresh process:

* peer: ``deepspeed.utils.zero_to_fp32.convert_zero_checkpoint_to_fp32_state_dict`` (consolidate the
  partitioned fp32 weights and ``torch.save`` them, the standard way out of a DeepSpeed checkpoint: no
  renaming, no config, no tokenizer; its safetensors mode refuses the tied weights);
* ``python -m pretrain export`` (the same consolidation + LukeForMaskedLM conversion, checks against
  transformers' model, config and tokenizer files);

and prints seconds, peak RSS (``ru_maxrss`` of the child) and output size for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def synthetic_spm(path: Path, n_pieces: int) -> None:
    """A valid unigram model with ``n_pieces`` pieces (XLM-R layout <unk> <s> </s>), built as a proto."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    m.trainer_spec.vocab_size = n_pieces
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = True
    m.normalizer_spec.escape_whitespaces = True
    for piece, kind in (("<unk>", pb.ModelProto.SentencePiece.UNKNOWN), ("<s>", pb.ModelProto.SentencePiece.CONTROL),
                        ("</s>", pb.ModelProto.SentencePiece.CONTROL)):
        m.pieces.add(piece=piece, score=0.0, type=kind)
    alphabet = "abcdefghijklmnopqrstuvwxyz@#"
    for c in alphabet:
        m.pieces.add(piece=c, score=-5.0)
    i = 0
    while len(m.pieces) < n_pieces:
        m.pieces.add(piece=f"\u2581w{i}", score=-10.0 - i * 1e-5)
        i += 1
    path.write_bytes(m.SerializeToString())


def make_run(root: Path, args) -> Path:
    """OUT dir with config.yaml, model_config.json, shards (spm + vocab + manifest) and one ZeRO-2 checkpoint."""
    import deepspeed
    import torch

    from data_prep.entities.vocab_file import EntityEntry, special_entries, write_entity_vocab
    from pretrain.config import dump_yaml, load_config
    from pretrain.data import sha256_file
    from pretrain.model import MLukeConfig, MLukeForMaskedLM

    shards = root / "shards"
    shards.mkdir(parents=True)
    synthetic_spm(shards / "sentencepiece.bpe.model", args.words - 2)
    entries = special_entries() + [EntityEntry(i, f"Q{i}", ((f"Entity {i}", "en"),), 1) for i in range(4, args.entities)]
    write_entity_vocab(shards / "entity_vocab.jsonl", entries)
    (shards / "en" / "train").mkdir(parents=True)
    manifest = {
        "languages": {"en": {}},
        "limits": {"max_seq_length": 512, "max_entity_length": 128, "max_mention_length": 30},
        "spm": {"file": "sentencepiece.bpe.model", "sha256": sha256_file(shards / "sentencepiece.bpe.model")},
        "entity_vocab": {"file": "entity_vocab.jsonl", "sha256": sha256_file(shards / "entity_vocab.jsonl")},
        "fingerprint": "bench",
    }
    (shards / "manifest.json").write_text(json.dumps(manifest))
    out = root / "out"
    out.mkdir()
    cfg = load_config(None, [f"output_dir={out}", f"data.shards={shards}", "deepspeed.zero_stage=2", "deepspeed.precision=fp32"])
    (out / "config.yaml").write_text(dump_yaml(cfg))
    mc = MLukeConfig(vocab_size=args.words, hidden_size=args.hidden, num_hidden_layers=args.layers,
                     num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
                     entity_vocab_size=args.entities, entity_emb_size=256)
    (out / "model_config.json").write_text(json.dumps(mc.to_dict()))

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
    model = MLukeForMaskedLM(mc)
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 2},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}}, "steps_per_print": 10**9}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    ids = torch.randint(4, args.words - 1, (1, 16))
    labels = torch.full_like(ids, -100)
    labels[0, 3] = ids[0, 3]
    o = engine(input_ids=ids, attention_mask=torch.ones_like(ids), entity_ids=torch.tensor([[5]]),
               entity_attention_mask=torch.ones(1, 1, dtype=torch.long), entity_position_ids=torch.tensor([[[1, 2] + [-1] * 28]]),
               mlm_labels=labels, mep_labels=torch.tensor([[5]]))
    engine.backward(o.mlm_loss_sum + o.mep_loss_sum)
    engine.step()
    engine.save_checkpoint(str(out / "checkpoints"), tag="step000001", save_latest=True)
    return out


WRAPPER = (  # runs a command and prints its peak RSS: a fresh parent, so other children do not count
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
    "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS GiB) of a command run in its own process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], check=True, capture_output=True, text=True, cwd=REPO)
    return time.perf_counter() - t0, int(out.stdout.strip()) / 2**20  # kB -> GiB


def du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--words", type=int, default=250_002)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    ap.add_argument("--_build", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._build is not None:  # child: build the checkpoint (own process: DeepSpeed's memory is not counted)
        make_run(args._build, args)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        build = [sys.executable, __file__, "--_build", str(root), "--hidden", str(args.hidden), "--layers", str(args.layers),
                 "--words", str(args.words), "--entities", str(args.entities)]
        t0 = time.perf_counter()
        subprocess.run(build, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        print(f"checkpoint built in {time.perf_counter() - t0:.1f}s: {du(root / 'out' / 'checkpoints'):.2f} GiB "
              f"(hidden {args.hidden}, {args.layers} layers, {args.words} words, {args.entities} entities)")
        ckpt = root / "out" / "checkpoints"
        peer_code = ("from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict as c;"
                     f"c({str(ckpt)!r}, {str(root / 'peer')!r}, safe_serialization=False)")
        peer_s, peer_rss = timed([sys.executable, "-c", peer_code])
        ours_s, ours_rss = timed([sys.executable, "-m", "pretrain", "export", "--checkpoint", str(ckpt), "--out", str(root / "hf")])
        print(f"{'':<44}{'seconds':>9}{'peak RSS GiB':>14}{'output GiB':>12}")
        print(f"{'deepspeed zero_to_fp32 (consolidate + save)':<44}{peer_s:>9.1f}{peer_rss:>14.2f}{du(root / 'peer'):>12.2f}")
        print(f"{'pretrain export (+ convert, check, tokenizer)':<44}{ours_s:>9.1f}{ours_rss:>14.2f}{du(root / 'hf'):>12.2f}")
        print(f"ratio export / zero_to_fp32: {ours_s / peer_s:.2f}x time, {ours_rss / peer_rss:.2f}x peak memory")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
