"""Stage 3, shards (``train-spm``, ``shards``): sentencepiece, sentence splitting, packing, the shard writer.

In: corpus directories, the entity vocabulary JSONL (:mod:`data_prep.entities`), an XLM-R sentencepiece model.
Out: ``OUT/{lang}/{train,validation}`` (``datasets`` save_to_disk) + ``OUT/manifest.json``, model and vocab copies.
"""
