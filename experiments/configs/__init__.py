"""ml_collections config files of the experiments: one file per experiment, each with `defaults()` (every
valid key, documented where it is set), one function per preset, `PRESETS` and `get_config(preset)`.
Keys shared by the training experiments are set in `sharpening_training.py`."""
