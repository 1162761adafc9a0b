"""The demo's plan reads the sample application from real files: every file under
demo/sample_app/ is used, each once, and nothing else is read."""

from pathlib import Path

from demo import plan


def files_under(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_every_sample_file_is_used_once():
    used = [f"start/{path}" for _message, files in plan.SAMPLE_COMMITS for path in files]
    for leg in plan.LEGS:
        for bead in leg.beads:
            for change in bead.changes:
                suffix = plan.APPEND_SUFFIX if change.mode == "append" else ""
                used.append(f"beads/{leg.key}/{bead.key}/{change.path}{suffix}")

    assert len(used) == len(set(used))
    assert set(used) == files_under(plan.SAMPLE_APP)


def test_the_sample_starts_as_its_files_say():
    for _message, files in plan.SAMPLE_COMMITS:
        for path, content in files.items():
            assert (plan.START / path).read_bytes() == content.encode()
