"""Data preparation for mLUKE: Wikipedia dumps -> pages -> interwiki -> entity vocabulary -> shards.

One sub-package per stage, named for what it produces: :mod:`data_prep.pages` (dump -> corpus),
:mod:`data_prep.entities` (corpora + interwiki -> entity vocabulary), :mod:`data_prep.shards` (corpora +
vocabulary + sentencepiece -> training shards); :mod:`data_prep.pipeline` chains them (``run``), and
:mod:`data_prep.common` holds the plumbing ``pretrain`` shares. ``sample/`` is the bundled sample data.

This package never imports torch, so data preparation runs on machines without it.
"""

LANGUAGES_24 = (
    "ar bn de el en es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh".split()
)
