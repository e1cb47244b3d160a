"""Sites are sampled by site id with the run's key: the same sites whatever their nodes are
numbered, and a node that will not say which site it holds ranks last."""

from flwr.app import ConfigRecord, Message, RecordDict

from client.client_app import app as client_app
from common import wire
from common.config import load_config
from server.run.inprocess import InProcessGrid
from server.sites.sampling import SiteSampler, ranked

CFG = load_config({"fed.num-sites": 6})


def grid(node_ids: list[int], partitions: list[int], hook=None) -> InProcessGrid:
    configs = [{"partition-id": p, "num-partitions": 6} for p in partitions]
    return InProcessGrid(
        client_app,
        CFG.to_run_config(),
        num_nodes=len(node_ids),
        node_configs=configs,
        node_ids=node_ids,
        reply_hook=hook,
    )


def sites_chosen(g: InProcessGrid, sampler: SiteSampler, server_round: int) -> set[str]:
    nodes = sampler.choose(g, g.get_node_ids(), 3, server_round=server_round)
    return {f"site-{g.contexts[n].node_config['partition-id']}" for n in nodes}


def test_the_same_sites_are_sampled_however_their_nodes_are_numbered() -> None:
    first = grid([11, 12, 13, 14, 15, 16], [0, 1, 2, 3, 4, 5])
    restarted = grid([907, 3, 55, 21, 400, 8], [4, 2, 5, 0, 3, 1])  # new ids, other order
    a, b = SiteSampler("k"), SiteSampler("k")
    rounds = range(1, 9)
    picks = [sites_chosen(first, a, r) for r in rounds]
    assert picks == [sites_chosen(restarted, b, r) for r in rounds]
    assert len({frozenset(p) for p in picks}) > 1, "every round sampled the same sites"
    # the queries were asked once per node, not every round
    queries = [m for m in restarted.sent if m.metadata.message_type == "query"]
    assert len(queries) == 6
    assert picks[0] == set(ranked([f"site-{i}" for i in range(6)], key="k", server_round=1)[:3])


def test_the_sample_follows_the_key_and_everyone_trains_when_all_are_wanted() -> None:
    g = grid([1, 2, 3, 4, 5, 6], list(range(6)))
    rounds = range(1, 9)
    one = [sites_chosen(g, SiteSampler("key-1"), r) for r in rounds]
    other = [sites_chosen(g, SiteSampler("key-2"), r) for r in rounds]
    assert one != other
    assert SiteSampler("k").choose(g, [1, 2, 3], 3, server_round=1) == [1, 2, 3]


def test_a_node_that_does_not_answer_the_query_or_lies_about_its_form_ranks_last() -> None:
    def hook(sent: Message, reply: Message) -> Message:
        if sent.metadata.dst_node_id == 1:  # claims a malformed id
            content = RecordDict({wire.SITE: ConfigRecord({"site-id": "../../etc"})})
            return Message(content=content, reply_to=sent)
        return reply

    g = grid([1, 2, 3, 4, 5, 6], list(range(6)), hook=hook)
    sampler = SiteSampler("k")
    for r in range(1, 12):
        chosen = sampler.choose(g, g.get_node_ids(), 5, server_round=r)
        assert 1 not in chosen
    assert 1 not in sampler.site_of
