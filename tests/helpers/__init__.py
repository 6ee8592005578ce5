"""Shared test helpers (no tests here).

- `tiny_models`: tiny transformers with randomised parameters (`tiny`, `randomize`, `assert_close`,
  `tokens_like`, `assert_scan_matches`: scanned twin = unrolled model), `Recorder` (reference
  hooks that keep what they see) and `assert_site_shapes` (site shapes + the blocks' order).
- `numpy_transformer`: an independent NumPy float64 transformer forward pass, the oracle for the
  transformer, interventions and analysis tests.
- `numpy_sae`: an independent NumPy float64 SAE / transcoder forward pass.
- `tiny_train_config`: a tiny version of the flagship training config, in process or as a binary.
- `processes`: `free_port` for tests that start a multi-process run.
"""
