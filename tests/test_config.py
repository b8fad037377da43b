"""The shipped config and the schema agree; mistakes are rejected with the key's name."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from parrotscope.config import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "schemas" / "config.schema.yaml")


def load(path):
    return yaml.safe_load(Path(path).read_text())


def validated(cfg):
    cfg = copy.deepcopy(cfg)
    validate(cfg, SCHEMA, set_default=True)
    check_config(cfg)
    return cfg


@pytest.mark.parametrize("path", [ROOT / "config.yaml", *sorted((ROOT / "tests" / "configs").glob("*.yaml"))])
def test_shipped_configs_validate(path):
    validated(load(path))


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_overlays_validate_over_the_default(path):
    """configs/*.yaml are layered over config.yaml (`--configfile config.yaml configs/X.yaml`),
    merged key by key as Snakemake merges config files."""
    from snakemake.utils import update_config

    cfg = load(ROOT / "config.yaml")
    update_config(cfg, load(path))
    assert validated(cfg)["train"]["hparams"] == load(ROOT / "config.yaml")["train"]["hparams"]


def test_defaults_fill_every_section():
    cfg = validated({"datasets": {"d": {"shards": "x.tar"}}})
    assert cfg["spot"]["backend"] == "rapidocr"
    assert cfg["match"]["normalisation"] == {"lowercase": True, "strip_punctuation": True, "strip_accents": True}
    assert cfg["datasets"]["d"]["shards_per_part"] == 10


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["datasets"]["demo"].__setitem__("shards_per_prt", 3), "shards_per_prt"),
    (lambda c: c.__setitem__("spto", {}), "spto"),
    (lambda c: c["datasets"]["demo"].__setitem__("shards_per_part", 0), "minimum"),
    (lambda c: c["datasets"]["demo"].__setitem__("shards_per_part", "two"), "integer"),
    (lambda c: c.setdefault("match", {}).__setitem__("fuzzy_threshold", 1.5), "maximum"),
    (lambda c: c.setdefault("spot", {}).__setitem__("backend", "tesseract"), "tesseract"),
])
def test_schema_rejects_typos_types_and_ranges(mutate, expected):
    cfg = load(ROOT / "config.yaml")
    mutate(cfg)
    with pytest.raises(WorkflowError, match=expected):
        validated(cfg)


def test_dataset_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="datasets.x"):
        check_config({"datasets": {"x": {"shards_per_part": 1}}})
    with pytest.raises(ConfigError, match="both"):
        check_config({"datasets": {"x": {"shards": "a.tar", "generator": {}}}})


def test_schema_lists_exactly_the_demo_generator_keys():
    from parrotscope.demo import DEFAULTS

    schema = load(SCHEMA)
    assert set(schema["$defs"]["generator"]["properties"]) == set(DEFAULTS)


def test_generator_relations_are_checked_at_planning_time():
    cfg = {"datasets": {"demo": {"generator": {"caption_exact_prob": 0.9}}}}
    with pytest.raises(ConfigError, match="datasets.demo.generator"):
        check_config(cfg)


def test_study_datasets_default_to_the_old_key_and_are_checked():
    two = {"a": {"shards": "a.tar"}, "b": {"shards": "b.tar"}}
    assert validated({"datasets": two})["study_datasets"] == ["a"]
    old = validated({"datasets": two, "study_dataset": "b"})
    assert old["study_datasets"] == ["b"] and old["study_dataset"] == "b"
    new = validated({"datasets": two, "study_datasets": ["b", "a"], "study_tables": {"a": ["table2"]}})
    assert new["study_dataset"] == "b"
    from parrotscope.config import study_tables
    assert study_tables(new, "a") == ["table2"] and study_tables(new, "b")[0] == "table2"
    assert study_tables(new, "b")[-2:] == ["table10", "table_filters"]
    for change, message in [
        ({"study_datasets": ["a", "c"]}, "'c' is not one of datasets"),
        ({"study_datasets": ["a", "a"]}, "names a dataset twice"),
        ({"study_datasets": ["a", "b"], "study_dataset": "b"}, "differs from the first"),
        ({"study_datasets": ["a"], "study_tables": {"b": ["table2"]}}, "not one of study_datasets"),
        ({"study_datasets": ["a", "b"], "study_tables": {"b": ["table9"]}}, "not study tables"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validated({"datasets": two, **change})
