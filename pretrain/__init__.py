"""mLUKE pretraining: config, model, masking/batching, DeepSpeed trainer, export, evaluation."""
