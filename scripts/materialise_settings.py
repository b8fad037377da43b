from parrotscope.io import write_json
from parrotscope.smk import log_to_file

with log_to_file(snakemake):
    write_json(dict(snakemake.params.settings), snakemake.output[0])
