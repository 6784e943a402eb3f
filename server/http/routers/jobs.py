"""Jobs: many frames of one actor computed in order; their status, their finished frames, cancelling them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from server.http.dependencies import Jobs, require_token
from server.http.schemas import ErrorAnswer, JobRequest, JobStatus

NPZ_TYPE = "application/x-npz"

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorAnswer}, 404: {"model": ErrorAnswer}})


@router.post("", response_model=JobStatus, responses={422: {"model": ErrorAnswer}, 507: {"model": ErrorAnswer}})
def submit_job(req: JobRequest, jobs: Jobs) -> dict[str, Any]:
    job = jobs.submit(req.to_spec())
    return {"id": job.id, **job.status()}


@router.get("/{job_id}", response_model=JobStatus)
async def read_job(job_id: str, jobs: Jobs) -> dict[str, Any]:
    """On the event loop (in-memory state only): it answers at once while renders wait for the model queue."""
    return jobs.get(job_id).status()


@router.get("/{job_id}/frames/{n}", response_class=Response, responses={200: {"content": {NPZ_TYPE: {}}}})
def read_job_frame(job_id: str, n: int, jobs: Jobs) -> Response:
    return Response(jobs.frame_path(job_id, n).read_bytes(), media_type=NPZ_TYPE)


@router.delete("/{job_id}", response_model=JobStatus)
def cancel_job(job_id: str, jobs: Jobs) -> dict[str, Any]:
    return jobs.cancel(job_id).status()
