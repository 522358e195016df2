import pyarrow as pa

from ray_jobs.config import DedupConfig
from ray_jobs.steps.dedup.exact import BUCKET, DUPLICATE_OF, EXACT_DUPLICATE, ExactHashStage, keep_lowest_id


def _table(ids, texts):
    return pa.table({"id": ids, "text": texts, "source": ["t"] * len(ids)})


def test_lowest_id_of_each_text_is_kept_whatever_the_row_order():
    ids = ["d", "b", "c", "a", "e"]
    texts = ["Same text.", "Other", "same TEXT.", "Same text.", "other"]
    hashed = ExactHashStage(DedupConfig(num_buckets=1))(_table(ids, texts))
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        out = keep_lowest_id(hashed.take(pa.array(order)))
        got = {r["id"]: (r["status"], r[DUPLICATE_OF]) for r in out.to_pylist()}
        assert got == {
            "a": ("kept", None), "c": (EXACT_DUPLICATE, "a"), "d": (EXACT_DUPLICATE, "a"),
            "b": ("kept", None), "e": (EXACT_DUPLICATE, "b"),
        }
        assert BUCKET not in out.column_names


def test_case_sensitive_hashing_keeps_case_variants():
    hashed = ExactHashStage(DedupConfig(num_buckets=1, lowercase=False))(_table(["a", "b"], ["Text", "text"]))
    assert keep_lowest_id(hashed)["status"].to_pylist() == ["kept", "kept"]


def test_buckets_are_a_function_of_the_text_only():
    stage = ExactHashStage(DedupConfig(num_buckets=7))
    a = stage(_table(["x", "y"], ["alpha", "beta"]))[BUCKET].to_pylist()
    b = stage(_table(["z", "w"], ["beta", "alpha"]))[BUCKET].to_pylist()
    assert a == b[::-1] and all(0 <= x < 7 for x in a)
