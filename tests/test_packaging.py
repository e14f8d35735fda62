"""The package list of setup.cfg is complete: every folder of fc_jax with an `__init__.py` is installed, and the
top-level configs/ folder is installed as `fc_jax.configs`. (`.ci/installed` installs the package non-editable
into a fresh virtualenv and runs the main job and a packaged-config training run from another directory.)"""

import configparser
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_cfg_lists_every_package_and_maps_the_configs():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    listed = {p.strip() for p in cfg["options"]["packages"].split("\n") if p.strip()}
    found = {os.path.relpath(root, REPO).replace(os.sep, ".") for root, _, files in os.walk(os.path.join(REPO, "fc_jax"))
             if "__init__.py" in files}
    assert found and found | {"fc_jax.configs"} == listed, (sorted(found - listed), sorted(listed - found))
    mapping = dict(line.split("=") for line in cfg["options"]["package_dir"].split("\n") if line.strip())
    assert {k.strip(): v.strip() for k, v in mapping.items()} == {"fc_jax.configs": "configs"}
    assert os.path.isfile(os.path.join(REPO, "configs", "__init__.py"))
