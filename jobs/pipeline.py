"""Several stages in one application (one driver, one set of executors), the same as `reki run`:
`spark-submit jobs/pipeline.py --config FILE [--stages train,report]`; every stage without --stages."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
