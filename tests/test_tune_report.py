"""What a trial hands Ray at each validation, checked without Ray: its metrics and a checkpoint
file of that very step, which for a validation that ends an epoch is the last.ckpt just written."""

import json


def test_each_report_carries_its_own_step_and_count_and_links_last_ckpt(train):
    _, run_dir = train("model=mlp", "trainer.max_epochs=3", "test=false", "+callbacks.tune_report._target_=tests.probes.RecordingReport")
    reports = [json.loads(line) for line in (run_dir / "reports.jsonl").read_text().splitlines()]
    assert [r["metrics"]["reports"] for r in reports] == [1, 2, 3]
    assert [r["metrics"]["epoch"] for r in reports] == [0, 1, 2]
    for report in reports:  # the file is the state the report describes, and knows which report it came with
        assert report["checkpoint_step"] == report["metrics"]["step"] > 0
        assert report["checkpoint_reports"] == report["metrics"]["reports"]
    # The last epoch's last.ckpt is written when training ends, after its report: that one is saved.
    assert [r["linked"] for r in reports] == [True, True, False]
    kept = sorted(p.name for p in (run_dir / "checkpoints" / "reports").iterdir())
    assert len(kept) == 2 and kept[-1] == f"step{reports[-1]['metrics']['step']:08d}"  # keep=2
