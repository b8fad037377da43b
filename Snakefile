# parrotscope: measure and remove parrot captions from web image-text data.
# This file is a table of contents: configuration, one include per stage, and the default target.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/mmc4.smk"
include: "rules/ingest.smk"
include: "rules/spot.smk"
include: "rules/match.smk"
include: "rules/inpaint.smk"
include: "rules/train.smk"
include: "rules/score.smk"
include: "rules/evaluate.smk"
include: "rules/index.smk"
include: "rules/curate.smk"
include: "rules/materialise.smk"
include: "rules/tables.smk"
include: "rules/synth.smk"
include: "rules/embed.smk"
include: "rules/cluster.smk"
include: "rules/figures.smk"
include: "rules/heldout.smk"
include: "rules/report.smk"
include: "rules/filters.smk"
include: "rules/str.smk"
include: "rules/blip.smk"


rule all:
    input:
        default_targets(),
    default_target: True
