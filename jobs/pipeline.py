"""Local orchestration of every stage, the same as `reki run --config FILE`."""

import sys

from reki_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
