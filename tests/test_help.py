"""`python -m dtrain --help` as a user reads it: dtrain's own text, examples, and every group a user
chooses from with a description and its options, and none of the pieces that are not choices."""

import pytest

from dtrain.config.compose import CONF_DIR
from tests.conftest import dtrain_cli

# Groups that are pieces of another config (a model's input size, a model's validation cadence):
# never chosen on their own, so never offered.
INTERNAL_GROUPS = {"model/input", "budget/validate"}
OTHER_COMMANDS_GROUPS = {"sweep"}  # python -m dtrain.tune's (conf/tune.yaml)


def groups_on_disk() -> dict[str, list[str]]:
    """Every config group under dtrain/conf and its options, as Hydra finds them."""
    groups = {}
    for folder in CONF_DIR.rglob("*"):
        options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        group = folder.relative_to(CONF_DIR).as_posix()
        if options and not group.startswith("hydra"):
            groups[group] = options
    return groups


@pytest.fixture(scope="module")
def help_lines(tmp_path_factory):
    done = dtrain_cli("--help", cwd=tmp_path_factory.mktemp("help"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_help_is_dtrains_own_with_usage_and_examples(help_lines):
    text = "\n".join(help_lines)
    assert help_lines[0].startswith("dtrain")
    assert "powered by Hydra" not in text
    assert any(line.startswith("usage: python -m dtrain") for line in help_lines)
    examples = [line.strip() for line in help_lines if line.startswith("  python -m dtrain")]
    assert 6 <= len(examples) <= 8, examples
    for what in ("trainer=ddp", "-m ", "resume=", "data.path=", "model._target_=", "dtrain.plan"):
        assert any(what in example for example in examples), what
    assert examples[0].split("  ")[0] == "python -m dtrain"  # first, the plain default run


def test_every_public_group_is_listed_with_a_description_and_its_options(help_lines):
    listed = {line.partition(": ")[0]: i for i, line in enumerate(help_lines) if ": " in line and not line.startswith(" ")}
    for group, options in groups_on_disk().items():
        if group in INTERNAL_GROUPS | OTHER_COMMANDS_GROUPS:
            continue
        assert group in listed, f"{group} is not in --help (describe it in conf/hydra/help/dtrain.yaml, or it is internal)"
        line = help_lines[listed[group]]
        shown = line.partition(": ")[2].split(", ")
        assert shown == [o for o in options if (group, o) not in {("trainer", "default"), ("data", "default")}], line  # shared keys, no choice
        description = help_lines[listed[group] + 1]
        assert description.startswith("    ") and len(description.split()) >= 3, (group, description)


def test_internal_pieces_are_not_offered(help_lines):
    for group in INTERNAL_GROUPS | OTHER_COMMANDS_GROUPS | {"hydra/help", "hydra/launcher", "hydra/job_logging"}:
        assert not any(line.startswith(f"{group}:") for line in help_lines), group
    trainer = next(line for line in help_lines if line.startswith("trainer: "))
    assert "ddp" in trainer and "default" not in trainer.split(": ")[1].split(", ")
