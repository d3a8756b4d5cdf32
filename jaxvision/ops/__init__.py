"""Detection ops: pure `jnp` functions with static shapes, safe under `jax.jit`.

Import the modules directly, e.g. `from jaxvision.ops import boxes`.
"""
