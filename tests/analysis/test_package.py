"""The `jaxinterp.analysis` surface: a short `__all__` (modules and their main functions) that
the package docstring lists, and every earlier package-level name still importable."""

import types

from jaxinterp import analysis as A

# Names importable from the package before `__all__` was shortened (the README and colabs use them).
EARLIER = [
    "ActivationStats", "LogitAttribution", "ProbeFit", "TunedLens", "act_patch", "activation_stats",
    "attention_sink_score", "attr_patch", "classify_heads", "detection_score",
    "direct_logit_attribution", "duplicate_token_pattern", "fit_linear_probe",
    "fit_linear_probe_stream", "fit_logistic_probe", "fit_logistic_probe_stream",
    "induction_pattern", "induction_score", "init_tuned_lens", "lens_kl", "load_tuned_lens",
    "logit_lens", "mean_difference", "path_patch", "previous_token_pattern",
    "previous_token_score", "principal_direction", "process_weights", "retrieval_score",
    "save_tuned_lens", "site_batches", "steer", "steering_vectors", "strength_sweep",
    "successor_score", "train_tuned_lens", "tuned_lens",
]


def test_all_is_the_documented_modules_and_main_functions():
    modules = [n for n in A.__all__ if isinstance(getattr(A, n), types.ModuleType)]
    functions = [n for n in A.__all__ if n not in modules]
    # The docstring's table: one row per module, "module  main function(s)  what it answers".
    table = A.__doc__.split("what it answers")[1].split("The modules' other")[0]
    rows = [line.split()[0] for line in table.splitlines() if line[2:3].strip()]
    assert sorted(modules) == sorted(rows), (modules, rows)
    for name in A.__all__:
        assert name in A.__doc__, name
    per_module = {}
    for name in functions:  # each main function is defined in one of the listed modules
        module = getattr(A, name).__module__.removeprefix("jaxinterp.analysis.")
        assert module in modules, name
        per_module.setdefault(module, []).append(name)
    assert max(len(v) for v in per_module.values()) <= 3, per_module  # "main" stays short


def test_earlier_names_still_importable():
    for name in EARLIER:
        assert getattr(A, name) is getattr(getattr(A, getattr(A, name).__module__.split(".")[-1]),
                                           name), name
