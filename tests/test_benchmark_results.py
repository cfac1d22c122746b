"""Every committed benchmark result says what it measured: the fields ARCHITECTURE.md asks for,
and for files that predate the clean-tree stamp, a label saying so (benchmarks/record.py)."""

import json
import re
import sys

from paths import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import record  # noqa: E402


def test_every_result_file_names_its_commit_date_and_whether_the_tree_was_clean():
    files = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    assert files
    for path in files:
        result = json.loads(path.read_text())
        missing = [field for field in record.FIELDS if field not in result]
        assert not missing, f"{path.name} lacks {missing}"
        assert result["commit"] and result["commit"] != "unknown", path.name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", result["date"]) and result["date"] in path.name, path.name
        dirty = result["dirty"]
        assert dirty is False or (isinstance(dirty, str) and dirty.startswith("sha256:")) or (
            dirty is None and result.get("provenance") == record.UNSTAMPED), f"{path.name}: dirty={dirty!r}"


def test_every_raw_log_opens_with_its_provenance():
    """Raw device logs kept beside the results name the commit, whether it was clean, the
    device and the date on their first line, in words and as a JSON record."""
    logs = sorted((REPO / "benchmarks" / "results").rglob("*.log"))
    for path in logs:
        first = path.read_text().split("\n", 1)[0]
        assert first.startswith("# provenance:"), path.name
        assert re.search(r"commit [0-9a-f]{7,40}", first) and re.search(r"dirty (false|sha256:\w+)", first), path.name
        assert "device " in first and re.search(r"date \d{4}-\d{2}-\d{2}", first), path.name
        # and the same as a record a script reads (the fields every result JSON has)
        stamp = json.loads(first[first.index("; record {") + len("; record "):])
        assert {"commit", "dirty", "device", "torch", "date"} <= set(stamp), path.name
        assert stamp["dirty"] is False or str(stamp["dirty"]).startswith("sha256:"), path.name
        assert stamp["date"] in first and stamp["commit"] in first, path.name
