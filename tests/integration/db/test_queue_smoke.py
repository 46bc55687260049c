from galpipe.db.queue import TaskQueue
from tests.probes import counts_now


def test_claim_complete_roundtrip(queue: TaskQueue, add_galaxies) -> None:
    ids = add_galaxies(10)
    assert queue.enqueue("fetch", ids) == 10
    assert queue.enqueue("fetch", ids) == 0
    batch = queue.claim_batch("fetch", 4, 30, "w1")
    assert [t.source_id for t in batch] == ids[:4]
    assert queue.complete(None, "fetch", "w1", [t.source_id for t in batch]) == ids[:4]
    counts = counts_now(queue.pool)
    assert counts["fetch"]["done"] == 4
    assert counts["radon"]["queued"] == 4
    assert queue.ready_depth("fetch") == 6
