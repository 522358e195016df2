"""Ray's Job Submission API: `ray-jobs submit`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ray.job_submission import JobStatus, JobSubmissionClient


def submit_job(address: str, entrypoint: str, runtime_env: dict, on_log: Callable[[str], None]) -> tuple[str, str]:
    """Ray's Job Submission API: submit `entrypoint`, stream the driver's log to `on_log` as it comes, wait for the
    end; returns (job id, final status: SUCCEEDED, FAILED or STOPPED)."""
    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)

    async def follow() -> None:
        async for chunk in client.tail_job_logs(job_id):
            on_log(chunk)

    asyncio.run(follow())  # returns when the job's log ends, i.e. when it stops
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        time.sleep(0.5)
    return job_id, str(status.value)
