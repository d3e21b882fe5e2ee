"""Plumbing shared by ``data_prep`` and ``pretrain``: ``InputError``, atomic writes, typed YAML, subcommand dispatch.

No stage lives here and nothing here imports torch or any stage, so both packages can import it.
"""
