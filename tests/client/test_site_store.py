"""A site's run state on its own disk: a torn file does not keep the site out of the run."""

from pathlib import Path

import numpy as np
import pytest
import torch

from client.site_store import CachedReply, SiteStateError, SiteStore


def test_a_torn_critic_or_reply_is_moved_aside_and_the_site_goes_on(tmp_path: Path) -> None:
    """A torn critic.pt or reply.pt used to fail every later round of the run at that site
    (an error naming the file, and nothing to do about it mid-run). Both are disposable:
    the site moves the file aside for inspection and goes on (a fresh critic; a repeated
    instruction trained again, its steps paid in the ledger). The replay, which the server
    sends once per task, stays an error naming the file."""
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
    with pytest.raises(SiteStateError, match=r"replay\.pt is unreadable"):
        store.replay()
