"""transformers remote code for pre-LayerNorm (XLM-R XL) mLUKE exports.

``python -m pretrain export`` copies ``configuration_mluke_xl.py`` and ``modeling_mluke_xl.py`` next to the
weights and points ``auto_map`` in config.json at them, so that
``AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)`` loads the model. Both files import
only torch and transformers (and each other, relatively): users load them without this project.
"""
