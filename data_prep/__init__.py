"""Data preparation for mLUKE: Wikipedia dumps -> pages -> interwiki -> entity vocabulary -> shards.

This package never imports torch, so data preparation runs on machines without it.
"""

LANGUAGES_24 = (
    "ar bn de el en es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh".split()
)
