"""A failing site answers with an error reply that names the error but no local path."""

from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import app as client_app
from common import wire
from common.config import load_config


def test_error_reply_carries_no_local_path(tmp_path: Path) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    secret = tmp_path / "hospital-x" / "patients"
    cfg = load_config({"data.name": "mnist"})
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-root": str(secret), "partition-id": 0, "num-partitions": 1},
        state=RecordDict(),
        run_config=cfg.to_run_config(),
    )
    config = ConfigRecord({"task": 0, "seed": 0, "iterations": 1, "server-round": 1})
    msg = Message(RecordDict({wire.CONFIG: config}), dst_node_id=7, message_type=MessageType.TRAIN)
    reply = client_app(msg, context)
    assert reply.has_error()
    reason = reply.error.reason
    assert "hospital-x" not in reason and str(tmp_path) not in reason, reason
    assert reason.startswith("DatasetNotFoundError") and "<path>" in reason, reason


def _folder_site(root: Path, size: tuple[int, int], mode: str) -> None:
    from PIL import Image

    for c, name in enumerate(("normal", "drusen", "cnv", "dme")):
        for split, n in (("train", 4), ("test", 2)):
            for i in range(n):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new(mode, size, 60 * c + i if mode == "L" else (60 * c, i, 9)).save(path)


def test_a_site_whose_images_do_not_fit_the_run_is_told_both_shapes(tmp_path: Path) -> None:
    """A colour 16x16 site in a run of grayscale 8x8 images used to fail every round with
    only 'arrays do not fit ... wrong shape'; it is now refused naming both shapes, before
    any array is loaded, at train and at evaluate."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    _folder_site(tmp_path / "site", (16, 16), "RGB")
    cfg = load_config(
        {
            "data.name": "folder",
            "data.classes": "normal,drusen,cnv,dme",
            "tasks.num-tasks": 2,
            "tasks.classes-per-task": 2,
        }
    )
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-root": str(tmp_path / "site"), "partition-id": 0, "num-partitions": 1},
        state=RecordDict(),
        run_config=cfg.to_run_config(),
    )
    for kind, config in (
        (MessageType.TRAIN, {"task": 0, "seed": 0, "iterations": 1, "server-round": 1}),
        (MessageType.EVALUATE, {"task": 0}),
    ):
        record = ConfigRecord({**config, wire.RUN_KEY: "1-x", wire.INPUT_SHAPE: "1x8x8"})
        msg = Message(RecordDict({wire.CONFIG: record}), dst_node_id=7, message_type=kind)
        reply = client_app(msg, context)
        assert reply.has_error()
        reason = reply.error.reason
        assert "3x16x16" in reason and "1x8x8" in reason, reason
        assert "arrays do not fit" not in reason


def test_a_federation_on_folder_data_must_declare_its_classes() -> None:
    """Each site would number its own folder names: 'Normal' at one site and 'normal' at
    another trained other labels, silently (93.3% -> 83.3% in the review)."""
    import pytest

    from common.config import ConfigError

    with pytest.raises(ConfigError, match=r"data\.classes.*case included"):
        load_config({"data.name": "folder", "fed.num-sites": 2})
    assert load_config({"data.name": "folder", "fed.num-sites": 1}).data.class_names == ()
    declared = load_config({"data.name": "folder", "fed.num-sites": 2, "data.classes": "a,B"})
    assert declared.data.class_names == ("a", "B")
