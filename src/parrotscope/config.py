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
        mmc4 = ds.get("format", "webdataset") == "mmc4"
        if mmc4 and has_shards and "images" not in ds:
            raise ConfigError(f"config datasets.{name}: an MMC4 dataset gives `images`, the folder or tar "
                              f"(`{{doc}}` = a document file's stem) holding its images by image_name")
        if "images" in ds and not (mmc4 and has_shards):
            raise ConfigError(f"config datasets.{name}.images: only MMC4 documents given as `shards` "
                              f"(`format: mmc4`) read their images from elsewhere")


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
    """Defaults that depend on other keys: the study datasets are `study_dataset` (the old key) or
    else the first configured dataset; `study_dataset` is the first study dataset, whose tables are
    the design card's `results/table3.csv` and so on; its scorer is a reference CLIP (tiny-rn) the
    workflow trains on that dataset's pool."""
    studies = config.get("study_datasets")
    if studies:
        if config.get("study_dataset") not in (None, studies[0]):
            raise ConfigError(f"config study_dataset: {config['study_dataset']!r} differs from the first of "
                              f"study_datasets {studies}; give study_datasets alone")
        config["study_dataset"] = studies[0]
    else:
        if config.get("study_dataset") is None:
            config["study_dataset"] = next(iter(config["datasets"]))
        config["study_datasets"] = [config["study_dataset"]]
    config.setdefault("study_tables", {})
    score = config.setdefault("score", {})
    if not score.get("scorers"):
        score["scorers"] = {"ref": {"arch": "tiny-rn", "trained_on": config["study_dataset"]}}


def check_study(config: dict) -> None:
    """Study datasets are configured datasets, once each; `study_tables` names study datasets and
    the tables built per dataset (:func:`study_table_names`)."""
    key = "study_datasets" if len(config["study_datasets"]) > 1 else "study_dataset"
    for study in config["study_datasets"]:
        if study not in config["datasets"]:
            raise ConfigError(f"config {key}: {study!r} is not one of datasets {sorted(config['datasets'])}")
    if len(set(config["study_datasets"])) < len(config["study_datasets"]):
        raise ConfigError(f"config study_datasets: {config['study_datasets']} names a dataset twice")
    known = study_table_names(config)
    for study, tables in config["study_tables"].items():
        if study not in config["study_datasets"]:
            raise ConfigError(f"config study_tables.{study}: not one of study_datasets {config['study_datasets']}")
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise ConfigError(f"config study_tables.{study}: {unknown} are not study tables {known}")


def study_table_names(config: dict) -> list[str]:
    """The tables built per study dataset: Table 2, the curation tables (curate.tables), Table 10
    and the filters table."""
    return ["table2", *((config.get("curate") or {}).get("tables") or {}), "table10", "table_filters"]


def study_tables(config: dict, dataset: str) -> list[str]:
    """The tables built for one study dataset: `study_tables.<dataset>`, else every study table."""
    chosen = config["study_tables"].get(dataset)
    return [t for t in study_table_names(config) if chosen is None or t in chosen]


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


# ----------------------------------------------------------------------------------------------
# Schema errors in plain words

# Schema keywords that state what a value must be, in the order they are worth reading.
_EXPECTATION_KEYWORDS = ("type", "enum", "const", "minimum", "exclusiveMinimum", "maximum",
                         "exclusiveMaximum", "minLength", "minItems", "minProperties", "pattern")


def config_key(path) -> str:
    """A config path as a user writes it: ``datasets.demo.shards_per_part``, ``x.items[2]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def expected_value(schema: dict) -> str:
    """What a schema accepts, in one phrase: ``integer, minimum 1``; alternatives joined by ``or``."""
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(expected_value(s) for s in schema.get("oneOf", schema.get("anyOf")))
    parts = []
    for keyword in _EXPECTATION_KEYWORDS:
        if keyword not in schema:
            continue
        value = schema[keyword]
        if keyword == "type":
            parts.append(" or ".join(value) if isinstance(value, list) else value)
        elif keyword == "enum":
            parts.append("one of " + ", ".join(repr(v) for v in value))
        else:
            parts.append(f"{keyword} {value!r}")
    return ", ".join(parts) or "a value the schema accepts"


def _unknown_key_message(error) -> str:
    """``config a.b.typo: unknown key; did you mean `a.b.key`? Known keys here: ...``."""
    import difflib

    known = sorted(error.schema.get("properties", {}))
    unknown = sorted(set(error.instance) - set(known))
    key = unknown[0] if unknown else "?"
    where = config_key([*error.absolute_path, key])
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"config {where}: unknown key; {hint}known keys here: {', '.join(known) or 'none'}"


def schema_error_message(error) -> str:
    """One line for a jsonschema error: the key, the value given and what is expected instead."""
    if error.validator == "additionalProperties" and error.validator_value is False:
        return _unknown_key_message(error)
    where = config_key(error.absolute_path)
    if error.validator == "required":
        return f"config {where}: {error.message}"
    if error.validator == "propertyNames":
        return f"config {where}: key {error.instance!r} is not allowed (expected {expected_value(error.schema)})"
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"config {where}: {message} (expected {expected_value(error.schema)})"


def _explained(error) -> str:
    # A oneOf/anyOf failure: the alternative that got furthest tells more than "not valid under any".
    from jsonschema.exceptions import best_match

    while error.context and error.validator in ("oneOf", "anyOf"):
        deeper = best_match(error.context)
        if deeper is None or len(deeper.absolute_path) <= len(error.absolute_path):
            break
        error = deeper
    return schema_error_message(error)


def check_schema(config: dict, schema: dict) -> None:
    """Validate ``config`` against the JSON Schema; raise :class:`ConfigError` with one line per
    mistake, each naming the key and the expected value (Snakemake's own validation, which fills
    the defaults, follows; its message names the schema path rather than what to write)."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines = list(dict.fromkeys(_explained(e) for e in errors))
    if len(lines) == 1:
        raise ConfigError(lines[0])
    if lines:
        raise ConfigError(f"{len(lines)} mistakes in the config:\n  " + "\n  ".join(lines))
