"""Bad input gets a clear error that names the problem, raised before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from tests.helpers.tiny_models import tiny

MODEL, VARIABLES, TOKENS = tiny()
D = MODEL.config.d_model


def run(*ivs, capture=()):
    return ji.run(MODEL, VARIABLES, TOKENS, capture=capture, interventions=list(ivs))


def test_unknown_site_lists_nearest_names():
    with pytest.raises(ValueError, match="matches no site") as e:
        run(ji.Add("blocks.1.hook_resid_pots", jnp.ones(D)))
    assert "blocks.1.hook_resid_post" in str(e.value) and "Nearest valid names" in str(e.value)
    with pytest.raises(ValueError, match=r"capture pattern 'blocks\.\*\.attn\.hook_patern'"):
        run(capture=["blocks.*.attn.hook_patern"])
    with pytest.raises(ValueError, match=r"blocks\.9\.hook_resid_post.*matches no site"):
        run(ji.Scale("blocks.9.hook_resid_post", 0.0))  # layer out of range
    scanned = ji.models.build("gpt2_small", **{**MODEL.config.__dict__, "scan_layers": True})
    with pytest.raises(ValueError, match="matches no site"):
        ji.run(scanned, ji.models.stack_layers(VARIABLES), TOKENS,
               interventions=[ji.Scale("blocks.5.hook_resid_post", 0.0)])


def test_errors_are_raised_at_trace_time_not_compile_time():
    f = jax.jit(lambda v: ji.run(MODEL, v, TOKENS,
                                 interventions=[ji.Add("blocks.0.hook_resid_post", jnp.ones(3))]))
    with pytest.raises(ValueError, match="does not broadcast"):
        f.trace(VARIABLES)  # tracing only: nothing is lowered or compiled


def test_wrong_vector_shape_names_site_and_both_shapes():
    with pytest.raises(ValueError) as e:
        run(ji.Add("blocks.0.hook_resid_post", jnp.ones(D + 1)))
    msg = str(e.value)
    assert "'blocks.0.hook_resid_post'" in msg and f"({D + 1},)" in msg and f"(3, 10, {D})" in msg
    with pytest.raises(ValueError, match=r"source has shape \(3, 9, 32\)"):
        run(ji.Patch("blocks.0.hook_resid_pre", jnp.ones((3, 9, D))))
    with pytest.raises(ValueError, match="mask has shape"):
        run(ji.Clamp("blocks.0.mlp.hook_post", 0.0, mask=np.ones(7, bool)))
    with pytest.raises(ValueError, match="directions have shape"):
        run(ji.ProjectOut("blocks.0.hook_resid_pre", jnp.ones((2, D - 1))))
    with pytest.raises(ValueError, match="fn returned shape"):
        run(ji.Apply("blocks.0.hook_resid_pre", lambda x: x[..., :3]))


def test_head_and_position_selection_errors():
    with pytest.raises(ValueError, match="head index 4 is out of range; the site has 4 heads"):
        run(ji.Ablate("blocks.0.attn.hook_z", heads=[1, 4]))
    with pytest.raises(ValueError, match="position index -11 is out of range"):
        run(ji.Scale("blocks.0.hook_resid_pre", 2.0, positions=[-11]))
    with pytest.raises(ValueError, match="has no 'head' axis"):
        run(ji.Scale("blocks.0.hook_resid_pre", 2.0, heads=[0]))
    with pytest.raises(ValueError, match=r"heads mask has shape \(3,\), expected \(4,\)"):
        run(ji.Scale("blocks.0.attn.hook_z", 2.0, heads=np.ones(3, bool)))
    with pytest.raises(ValueError, match="integer indices or a bool mask"):
        run(ji.Scale("blocks.0.attn.hook_z", 2.0, heads=[0.5]))


def test_token_ids_outside_vocab_are_an_error():
    bad = TOKENS.at[1, 2].set(MODEL.config.d_vocab)
    with pytest.raises(ValueError, match=r"token id 40 is outside \[0, d_vocab=40\)"):
        MODEL.apply(VARIABLES, bad)
    with pytest.raises(ValueError, match="token id -1"):
        ji.run(MODEL, VARIABLES, TOKENS.at[0, 0].set(-1))
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        MODEL.apply(VARIABLES, jnp.zeros((1, MODEL.config.n_ctx + 1), jnp.int32))
    with pytest.raises(ValueError, match="must be integers"):
        MODEL.apply(VARIABLES, TOKENS.astype(jnp.float32))


def test_unknown_preset_and_config_fields():
    with pytest.raises(ValueError, match=r"unknown model preset 'gpt2_smal'.*gpt2_small"):
        ji.models.build("gpt2_smal")
    with pytest.raises(ValueError, match=r"unknown config field.*'n_layer'.*did you mean n_layers"):
        ji.models.build("gpt2_small", n_layer=2)
    with pytest.raises(ValueError, match="n_key_value_heads=5 must be positive and divide"):
        ji.models.build("gpt2_small", n_key_value_heads=5)
    with pytest.raises(ValueError, match="act_fn='gleu'"):
        ji.models.build("gpt2_small", act_fn="gleu")
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        ji.models.build("gpt2_small", n_layers=0)
    with pytest.raises(ValueError, match="rotary_dim=3"):
        ji.models.build("llama_small", rotary_dim=3)


def test_bad_intervention_construction():
    with pytest.raises(ValueError, match="how must be 'zero', 'mean' or 'resample'"):
        ji.Ablate("blocks.0.hook_resid_pre", how="median")
    with pytest.raises(ValueError, match="needs key="):
        ji.Ablate("blocks.0.hook_resid_pre", how="resample")
    with pytest.raises(TypeError, match="must be jaxinterp interventions"):
        ji.run(MODEL, VARIABLES, TOKENS, interventions=[("blocks.0.hook_resid_pre", 0.0)])
