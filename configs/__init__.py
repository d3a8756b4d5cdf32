"""Experiment configs: one file per experiment (its recipe), `common.py` for what they share.

Each `configs/X.py` has `get_config(arg)` returning an `ml_collections.ConfigDict`;
its docstring gives the command, the expected result and runtime, and the
variants (`--config configs/X.py:smoke`).

How a config file finds `configs.common`: the scripts load a config by its
file path (ml_collections' `config_flags.DEFINE_config_file`), not as a module
of this package, and a script's `sys.path[0]` is `scripts/`. So, before
parsing the flags, `jaxvision.cli` puts the folder holding the config's
package on `sys.path` (for `configs/X.py`: the checkout root, the parent of
`configs/`). A config therefore works from any working directory, and always
imports the `common.py` that sits next to it. Tests import configs as modules
(`from configs import digits_cnn`); pytest has the repo root on its path
(`pythonpath` in pyproject.toml). `configs` is not installed with jaxvision.
"""
