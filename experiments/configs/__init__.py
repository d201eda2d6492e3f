"""ml_collections config files of the experiments; each `get_config(preset)` builds one preset."""
