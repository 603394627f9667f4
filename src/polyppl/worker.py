"""One backend run in its own process: ``python -m polyppl.worker REQUEST.json``.

`polyppl compare` starts one worker per backend so that a crash (a segfault, a killed
process) or a hang in one backend cannot take the others down. The worker writes the
run's InferenceData and JSON record atomically; on an exception it writes a record with
``status: error`` and the error text, and exits 1.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    from polyppl.inference import save_json
    from polyppl.jobs import resolve
    from polyppl.runner import run_job
    from polyppl.settings import SamplerSettings

    record_path = Path(request["record_path"])
    try:
        job = resolve(request["model"], request["scenario"], request["data"], request["parametrization"])
        run_job(job, request["backend"], SamplerSettings(**request["settings"]), out=request["out"])
    except Exception as exc:  # the whole point: record any failure of the backend, then exit
        save_json(
            {
                "model": request["model"],
                "scenario": request["scenario_label"],
                "backend": request["backend"],
                "status": "error",
                "seed": request["settings"]["seed"],
                "settings": request["settings"],
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
            },
            record_path,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
