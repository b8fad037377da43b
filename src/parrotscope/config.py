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


def check_config(config: dict) -> None:
    """Run every cross-key check; raises ConfigError on the first problem."""
    check_datasets(config)
    check_generators(config)
