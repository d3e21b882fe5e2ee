"""``python -m data_prep run --config configs/data/X.yaml``: extract -> interwiki -> entity vocab -> spm -> shards.

The driver only chains the stage functions for many languages; each step is skipped when its output
already exists (every stage writes atomically, so an existing output is a complete one), which makes an
interrupted run resumable and lets a cluster run the per-language steps as separate jobs
(``--languages xx --steps extract``) before one job runs the rest.

Layout under ``out_dir``::

    corpus/{lang}/          data_prep extract
    interwiki.parquet       data_prep interwiki
    entity_vocab.jsonl      data_prep entity-vocab
    sentencepiece.bpe.model data_prep train-spm (only when spm.model is not given)
    shards/                 data_prep shards
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.common.errors import InputError
from data_prep.common.typed_yaml import load_dataclass
from data_prep.shards.build import ShardConfig

STEPS = ("extract", "interwiki", "vocab", "spm", "shards")
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"


@dataclass
class InterwikiConfig:
    source: str = "page_props"  # page_props | wikidata | none (entities stay per language)
    page_props_dir: str = ""  # holds {lang}wiki-{date}-page_props.sql.gz
    wikidata_dump: str = ""  # latest-all.json.bz2


@dataclass
class VocabConfig:
    vocab_size: int = 1_200_000  # mLUKE: 1.2M entities, specials included
    min_languages: int = 3  # mLUKE keeps entities linked in at least 3 languages
    min_count: int = 1
    keep_red_links: bool = False  # True only for partial dumps such as the bundled sample
    per_language_top: int | None = None  # keep each language's N most linked targets before the merge; None = all


@dataclass
class SpmConfig:
    model: str = ""  # XLM-R's sentencepiece.bpe.model; empty = train one on the corpora
    vocab_size: int = 8000  # when training
    seed: int = 0


@dataclass
class PipelineConfig:
    languages: list[str] = field(default_factory=list)
    dumps_dir: str = ""  # {lang}wiki-{dump_date}-pages-articles[-multistream].xml[.bz2] (+ -index.txt.bz2)
    dump_date: str = "latest"
    out_dir: str = ""
    workers: int = 1
    limit_pages: int | None = None  # per language; for trial runs
    interwiki: InterwikiConfig = field(default_factory=InterwikiConfig)
    entity_vocab: VocabConfig = field(default_factory=VocabConfig)
    spm: SpmConfig = field(default_factory=SpmConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)  # the shards stage's own limits


def resolve_path(text: str) -> Path:
    """Paths are relative to the working directory; ``@sample/...`` is the bundled sample inside the package."""
    if text.startswith("@sample"):
        return SAMPLE_DIR / text[len("@sample") :].lstrip("/")
    return Path(text)


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    cfg, where = load_dataclass(PipelineConfig, path, overrides)
    if not cfg.languages:
        raise InputError(f"{where}: 'languages' must list at least one language")
    if not cfg.dumps_dir or not cfg.out_dir:
        raise InputError(f"{where}: 'dumps_dir' and 'out_dir' are required")
    if cfg.interwiki.source not in ("page_props", "wikidata", "none"):
        raise InputError(f"{where}: interwiki.source must be page_props, wikidata or none")
    if cfg.workers < 1:
        raise InputError(f"{where}: workers must be >= 1")
    try:
        cfg.shards.check()
    except InputError as e:
        raise InputError(f"{where}: shards: {e}") from None
    return cfg


def find_dump(dumps_dir: Path, lang: str, date: str) -> tuple[Path, Path | None]:
    """The best dump of ``lang``: multistream with its index (parallel), else plain bz2, else XML."""
    stem = f"{lang}wiki-{date}-pages-articles"
    multi = dumps_dir / f"{stem}-multistream.xml.bz2"
    index = dumps_dir / f"{stem}-multistream-index.txt.bz2"
    if multi.is_file() and index.is_file():
        return multi, index
    for cand in (multi, dumps_dir / f"{stem}.xml.bz2", dumps_dir / f"{stem}.xml"):
        if cand.is_file():
            return cand, None
    raise InputError(f"{dumps_dir}: no dump for {lang!r} (expected {stem}-multistream.xml.bz2 or {stem}.xml[.bz2])")


def run_pipeline(
    cfg: PipelineConfig, steps: tuple[str, ...] = STEPS, languages: list[str] | None = None, force: bool = False
) -> dict[str, str]:
    """Run ``steps`` for ``languages`` (default: all of the config's); returns {step: one-line summary}."""
    from data_prep.entities.entity_vocab import build_entity_vocab
    from data_prep.entities.interwiki import interwiki_from_page_props, interwiki_from_wikidata
    from data_prep.pages.extract import extract
    from data_prep.shards.build import build_shards
    from data_prep.shards.spm import train_spm

    langs = languages or cfg.languages
    unknown = sorted(set(langs) - set(cfg.languages))
    if unknown:
        raise InputError(f"--languages: {', '.join(unknown)} not in the config's languages")
    out = Path(cfg.out_dir)
    dumps_dir = resolve_path(cfg.dumps_dir)
    corpus = {lang: out / "corpus" / lang for lang in cfg.languages}
    all_corpora = [corpus[lang] for lang in cfg.languages]
    interwiki_path = out / "interwiki.parquet"
    vocab_path = out / "entity_vocab.jsonl"
    spm_path = resolve_path(cfg.spm.model) if cfg.spm.model else out / "sentencepiece.bpe.model"
    summary: dict[str, str] = {}

    def done(path: Path) -> bool:
        return path.exists() and not force

    if "extract" in steps:
        for lang in langs:
            if done(corpus[lang] / "stats.json"):
                summary[f"extract {lang}"] = "exists, skipped"
                continue
            dump, index = find_dump(dumps_dir, lang, cfg.dump_date)
            stats = extract(dump=dump, out=corpus[lang], index=index, workers=cfg.workers, limit_pages=cfg.limit_pages)
            summary[f"extract {lang}"] = f"{stats.articles} articles, {stats.links} links, {stats.failed} failed"

    missing = [str(c) for c in all_corpora if not (c / "stats.json").exists()]
    later = [s for s in ("interwiki", "vocab", "spm", "shards") if s in steps]
    if later and missing:
        raise InputError(f"{later[0]}: needs every language extracted first; missing {', '.join(missing)}")

    if "interwiki" in steps and cfg.interwiki.source != "none":
        if done(interwiki_path):
            summary["interwiki"] = "exists, skipped"
        elif cfg.interwiki.source == "page_props":
            pp_dir = resolve_path(cfg.interwiki.page_props_dir)
            files = [pp_dir / f"{lang}wiki-{cfg.dump_date}-page_props.sql.gz" for lang in cfg.languages]
            absent = [str(f) for f in files if not f.is_file()]
            if absent:
                raise InputError(f"interwiki: page_props dump not found: {', '.join(absent)}")
            st = interwiki_from_page_props(files, all_corpora, interwiki_path, languages=cfg.languages)
            summary["interwiki"] = f"{sum(st.rows_per_language.values())} (lang, title, qid) rows"
        else:
            st = interwiki_from_wikidata(resolve_path(cfg.interwiki.wikidata_dump), interwiki_path, cfg.languages)
            summary["interwiki"] = f"{sum(st.rows_per_language.values())} (lang, title, qid) rows"

    if "vocab" in steps:
        if done(vocab_path):
            summary["vocab"] = "exists, skipped"
        else:
            v = cfg.entity_vocab
            st = build_entity_vocab(
                all_corpora,
                vocab_path,
                vocab_size=v.vocab_size,
                interwiki=interwiki_path if cfg.interwiki.source != "none" else None,
                min_languages=v.min_languages,
                min_count=v.min_count,
                keep_red_links=v.keep_red_links,
                workers=cfg.workers,
                per_language_top=v.per_language_top,
            )
            summary["vocab"] = f"{st.size} entities (specials included) from {st.candidates} candidates"

    if "spm" in steps and not cfg.spm.model:
        if done(spm_path):
            summary["spm"] = "exists, skipped"
        else:
            train_spm(all_corpora, cfg.spm.vocab_size, spm_path, seed=cfg.spm.seed)
            summary["spm"] = f"trained, {cfg.spm.vocab_size} pieces"

    if "shards" in steps:
        s = cfg.shards
        res = build_shards(
            all_corpora,
            vocab_path,
            spm_path,
            out / "shards",
            max_seq_length=s.max_seq_length,
            max_entity_length=s.max_entity_length,
            max_mention_length=s.max_mention_length,
            valid_fraction=s.valid_fraction,
            workers=cfg.workers,
            keep_no_entity=s.keep_no_entity,
            min_sentence_tokens=s.min_sentence_tokens,
        )
        n_seq = sum(ls.sequences for ls in res.languages.values()) if hasattr(res, "languages") else "?"
        summary["shards"] = f"{n_seq} sequences in {out / 'shards'}"
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML data config (configs/data/*.yaml)")
    parser.add_argument("--languages", help="comma-separated subset of the config's languages (per-language steps)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--force", action="store_true", help="redo steps whose output exists")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")


def run_cli(args: argparse.Namespace) -> int:
    steps = tuple(s for s in args.steps.split(",") if s)
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise InputError(f"--steps: unknown step(s) {', '.join(bad)} (choose from {', '.join(STEPS)})")
    cfg = load_pipeline_config(args.config, args.overrides)
    langs = [x for x in args.languages.split(",") if x] if args.languages else None
    start = time.perf_counter()
    summary = run_pipeline(cfg, steps, langs, force=args.force)
    for step, line in summary.items():
        print(f"  {step:<14} {line}")
    print(f"data_prep run: {len(summary)} step(s) in {time.perf_counter() - start:.1f}s -> {cfg.out_dir}")
    return 0
