"""spark-submit entry for the prompts stage: `spark-submit jobs/prompts.py --config FILE [--set k=v]`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["prompts", *sys.argv[1:]]))
