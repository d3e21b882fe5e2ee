"""Stage 2, entities (``interwiki``, ``entity-vocab``): SQL and Wikidata dump readers, interwiki, entity vocabulary.

In: corpus directories (:mod:`data_prep.pages`) + ``*-page_props.sql.gz`` dumps or the Wikidata JSON dump.
Out: an interwiki parquet ``(lang, title, qid)`` and the entity vocabulary JSONL (or HF ``entity_vocab.json``).
"""
