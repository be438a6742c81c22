"""Ray entry for the extract stage's LLM half in the LLM-worker image (vLLM; no Spark there):
`ray job submit --working-dir . -- python jobs/answer.py [--encode] --config FILE [--set k=v]`.
The answers (and with --encode their vectors) are staged in the lake; the Spark image's
`jobs/pipeline.py --stages extract,encode` merges them."""

import sys

from ray_workers.answer import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
