"""`medisentinel reindex [TYPE...]`: rebuild search index rows after a definition changes.

Walks every current resource of each type in id order, in batches, each batch its own
transaction (so a long reindex never holds one huge transaction), with a progress bar.
Failures are listed and make the command exit non-zero: a reindex that says "done" while
rows are missing would be worse than none.
"""

from __future__ import annotations

from tqdm import tqdm

from app.context import RequestContext
from app.db import create_db_engine, refresh_statistics
from app.fhir import storage
from app.fhir.hooks import Pipeline
from app.fhir.service import FhirService
from app.fhir.validation import known_resource_types
from app.settings import Settings


def unknown_types(types: list[str]) -> list[str]:
    return [t for t in types if t not in known_resource_types()]


def run_reindex(settings: Settings, types: list[str], *, batch_size: int = 500) -> int:
    engine = create_db_engine(settings.database_url)
    service = FhirService(engine, Pipeline())
    ctx = RequestContext.system(settings.fhir_base_url, channel="cli")
    failures: list[str] = []
    done = 0
    try:
        for rtype in types or _types_present(service, ctx):
            with service.unit_of_work(ctx, write=False) as uow:
                total = storage.count_current(uow, rtype)
            done += _reindex_type(service, ctx, rtype, total, batch_size, failures)
        refresh_statistics(engine)
    finally:
        engine.dispose()
    print(f"reindexed {done} resource(s); {len(failures)} failure(s)")
    for failure in failures[:50]:
        print(f"  {failure}")
    return 1 if failures else 0


def _reindex_type(
    service: FhirService, ctx: RequestContext, rtype: str, total: int, batch_size: int,
    failures: list[str],
) -> int:  # fmt: skip
    after: str | None = None
    done = 0
    with tqdm(total=total, desc=rtype, unit="res") as bar:
        while True:
            with service.unit_of_work(ctx, write=True) as uow:
                batch = service.reindex_batch(uow, rtype, after, batch_size)
            failures.extend(batch.failures)
            done += batch.count - len(batch.failures)
            bar.update(batch.count)
            if batch.last_id is None or batch.count < batch_size:
                return done
            after = batch.last_id


def _types_present(service: FhirService, ctx: RequestContext) -> list[str]:
    with service.unit_of_work(ctx, write=False) as uow:
        return storage.types_present(uow)
