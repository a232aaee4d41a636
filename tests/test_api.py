"""The public surface: every name in ``__all__`` exists, and the README's Python example runs."""

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax


def test_all_names_import():
    assert len(set(nst_jax.__all__)) == len(nst_jax.__all__)
    for name in nst_jax.__all__:
        assert getattr(nst_jax, name) is not None, name
    public = {n for n in vars(nst_jax) if not n.startswith("_")}
    modules = {"cli"}
    assert public - modules - set(nst_jax.__all__) == set()


def test_vmap_over_style_weight_matches_loop(random_params):
    """The README's vmap example: one compiled call for several beta values."""
    rng = np.random.default_rng(0)
    content = jnp.asarray(rng.uniform(0, 255, (24, 20, 3)), jnp.float32)
    style = jnp.asarray(rng.uniform(0, 255, (20, 24, 3)), jnp.float32)
    image = jnp.asarray(rng.uniform(0, 255, (24, 20, 3)), jnp.float32)
    config = nst_jax.StyleConfig()
    targets = nst_jax.make_targets(random_params, content, style, config)
    weights = nst_jax.loss_weights(config)

    def loss(beta):
        return nst_jax.stylization_loss(
            image, random_params, targets, weights._replace(style=beta), config)[0]

    betas = jnp.array([1e2, 1e3, 1e4])
    batched = jax.jit(jax.vmap(loss))(betas)
    looped = jnp.stack([loss(b) for b in betas])
    np.testing.assert_allclose(batched, looped, rtol=1e-5)
    assert batched[0] < batched[1] < batched[2]
