"""Zero-shot architecture search (MAE-NAS) for distillation students."""
