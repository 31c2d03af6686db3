"""Ray job entrypoint: run one distillation spec on the cluster the job was submitted to.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/distill.py --spec examples/quickstart.yaml --output-dir /shared/runs/quickstart
    ray job submit ... -- python jobs/distill.py --spec s3://bucket/specs/r1.yaml --output-dir /shared/runs/r1
    ray job submit ... --metadata-json '{"distill.spec": "<the spec YAML>"}' -- \
        python jobs/distill.py --output-dir /shared/runs/r1          # inline, as distill.Client submits it

Inside a job RAY_ADDRESS is set, so every stage's Ray work (vLLM actors) lands on the cluster. The job writes
`<output_dir>/status.json` (stage and counts) as it goes; `python jobs/distill.py --help` lists every option.
The logic lives in `distill/service/job.py`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # vLLM spawns processes: keep the entry point guarded
    # The checkout this script belongs to, ahead of any other installed copy: the job runs the code it shipped.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from distill.service.job import main

    sys.exit(main())
