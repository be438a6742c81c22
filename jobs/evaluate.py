"""spark-submit entry for the evaluate stage: `spark-submit jobs/evaluate.py --config FILE [--set k=v]`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
