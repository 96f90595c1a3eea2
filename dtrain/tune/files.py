"""The files a trial keeps beside its run: names shared by the trial (run by Ray), its reporting
callback and the sweep's driver, which must not import torch or Lightning to know them (a 7 s
import on a small machine, before the first trial could start)."""

REPORTS_DIR = "checkpoints/reports"  # not checkpoints/*.ckpt: a resume takes last.ckpt, the newest
CHECKPOINT_FILE = "model.ckpt"
TIMING_FILE = "tune_report.json"  # how many reports, the seconds they took (sweep overhead), the last one
META_FILE = "meta.json"  # which trial wrote a checkpoint: a PBT restart may hand us another's
FINISHED_FILE = "tune_finished.json"  # written when the trial's run has returned: its last report
SCHEDULE_FILE = "pbt_schedule.jsonl"  # one line per exploit: whose weights, which values from then on
EXPLOITS_DIR = "pbt"  # the donor checkpoint each exploit took
