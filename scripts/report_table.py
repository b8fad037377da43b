from parrotscope.report import run_table_html
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    run_table_html(snakemake.input[0], snakemake.params.title, snakemake.output[0])
