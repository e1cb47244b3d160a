"""A site's run state on its own disk: a torn file does not keep the site out of the run."""

from pathlib import Path

import numpy as np
import torch

from client.site_store import DISPOSABLE, CachedReply, SiteStore


def test_a_torn_critic_or_reply_is_moved_aside_and_the_site_goes_on(tmp_path: Path) -> None:
    """A torn critic.pt or reply.pt used to fail every later round of the run at that site
    (an error naming the file, and nothing to do about it mid-run). Both are disposable:
    the site moves the file aside for inspection and goes on (a fresh critic; a repeated
    instruction trained again, its steps paid in the ledger). So are the replay and the DGM
    generator the server sent: without them the round fails naming what is missing and the
    server sends them again (tests/server/test_federation_inprocess.py)."""
    store = SiteStore(tmp_path, site_id="site-0", run_key="1-a")
    store.save_critic({"w": torch.ones(3)})
    store.save_reply(CachedReply(4, "d" * 64, {"solver.w": np.ones(2)}, {"num-examples": 9.0}))
    assert store.critic() is not None and store.reply_for("d" * 64) is not None
    for name in ("critic.pt", "reply.pt", "replay.pt"):
        (store.path / name).write_bytes(b"torn" * 10)
    assert store.critic() is None
    assert store.reply_for("d" * 64) is None
    assert (store.path / "critic.pt.unreadable").read_bytes() == b"torn" * 10
    assert (store.path / "reply.pt.unreadable").is_file()
    assert not (store.path / "critic.pt").exists() and not (store.path / "reply.pt").exists()
    store.save_critic({"w": torch.zeros(3)})  # the next round keeps its critic again
    assert torch.equal(store.critic()["w"], torch.zeros(3))
    assert store.replay() is None and (store.path / "replay.pt.unreadable").is_file()
    (store.path / "generator_base.pt").write_bytes(b"torn")
    assert store.generator_base() is None
    store.save_memory({"fisher.0.w": torch.ones(2)})  # EWC's Fisher: torn, it holds nothing
    assert torch.equal(store.memory()["fisher.0.w"], torch.ones(2))
    (store.path / "memory.pt").write_bytes(b"torn")
    assert store.memory() == {} and (store.path / "memory.pt.unreadable").is_file()
    assert set(DISPOSABLE) == {
        "critic.pt", "reply.pt", "replay.pt", "generator_base.pt", "memory.pt"
    }  # fmt: skip
