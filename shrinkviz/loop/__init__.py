"""The one training / evaluation loop (``train``), its configuration and presets (``config``), the pruning
masks it honours (``masks``) and the pretrained baselines it trains once and caches (``zoo``)."""
