"""Stage 1, pages (``extract``, ``make-multistream``): dump reading, wikitext rendering, corpus and redirect readers.

In: a MediaWiki XML dump ``*-pages-articles[-multistream].xml[.bz2|.gz]`` (+ its multistream index).
Out: a corpus directory: ``pages-NNNNN.parquet`` (paragraphs, link spans), ``redirects.parquet``, ``siteinfo.json``.
"""
