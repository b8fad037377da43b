"""Checks on the configuration that a JSON Schema cannot express well.

The schema (``schemas/config.schema.yaml``) validates types, ranges and unknown keys; these checks
cover relations between keys. Each error names the key and what is expected, and is raised while
the workflow is parsed, before any job runs.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration mistake, reported with the offending key."""


def check_datasets(config: dict) -> None:
    datasets = config.get("datasets") or {}
    if not datasets:
        raise ConfigError("config datasets: at least one dataset is required")
    for name, ds in datasets.items():
        has_gen, has_shards = "generator" in ds, "shards" in ds
        if has_gen == has_shards:
            raise ConfigError(
                f"config datasets.{name}: give exactly one of `shards` (your webdataset shards) "
                f"or `generator` (the built-in demo generator), not {'both' if has_gen else 'neither'}"
            )


def check_generators(config: dict) -> None:
    """Demo generator settings: relations between keys (probabilities, fonts) checked up front."""
    from .demo import check_fonts, demo_config

    for name, ds in config["datasets"].items():
        if "generator" in ds:
            try:
                check_fonts(demo_config(ds["generator"]))
            except (ValueError, FileNotFoundError) as exc:
                raise ConfigError(f"config datasets.{name}.generator: {exc}") from exc


def fill_derived_defaults(config: dict) -> None:
    """Defaults that depend on other keys: the study dataset is the first configured dataset, and
    its scorer is a reference CLIP (tiny-rn) the workflow trains on that dataset's pool."""
    if config.get("study_dataset") is None:
        config["study_dataset"] = next(iter(config["datasets"]))
    score = config.setdefault("score", {})
    if not score.get("scorers"):
        score["scorers"] = {"ref": {"arch": "tiny-rn", "trained_on": config["study_dataset"]}}


def check_study(config: dict) -> None:
    study = config.get("study_dataset")
    if study not in config["datasets"]:
        raise ConfigError(f"config study_dataset: {study!r} is not one of datasets "
                          f"{sorted(config['datasets'])}")


def check_scorers(config: dict) -> None:
    """Each scorer names exactly one weights source, and a trained one a configured dataset."""
    sources = ("trained_on", "pretrained", "checkpoint")
    for name, spec in (config.get("score") or {}).get("scorers", {}).items():
        given = [k for k in sources if spec.get(k) is not None]
        if len(given) != 1:
            raise ConfigError(f"config score.scorers.{name}: give exactly one of {list(sources)}, "
                              f"got {given or 'none'}")
        if "trained_on" in given and spec["trained_on"] not in config["datasets"]:
            raise ConfigError(f"config score.scorers.{name}.trained_on: {spec['trained_on']!r} is not "
                              f"one of datasets {sorted(config['datasets'])}")


def check_config(config: dict) -> None:
    """Fill derived defaults and run every cross-key check; raises ConfigError on the first problem."""
    check_datasets(config)
    check_generators(config)
    fill_derived_defaults(config)
    check_study(config)
    check_scorers(config)
