"""hybrid's decision (mesh_core/backends/choice.py): probe outcomes in, one medium and one line out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh_core.backends.choice import Choice, RedisProbe, SeedOutcome, SeedProbe, decide

V = 1
UP, SILENT, OTHER, REFUSED = SeedOutcome.ANSWERED, SeedOutcome.SILENT, SeedOutcome.OTHER_VERSION, SeedOutcome.REFUSED


def test_nothing_configured_stays_on_this_machine():
    got = decide(None, [], V)
    assert got == Choice("sqlite_local", "hybrid chose sqlite_local: no redis.url or grpc.seeds configured")


def test_a_redis_that_answers_is_chosen():
    got = decide(RedisProbe("redis://h:6379", answered=True, ms=3.2), [], V)
    assert got == Choice("redis_distributed", "hybrid chose redis_distributed: redis://h:6379 answered in 3 ms")


def test_redis_comes_before_live_seeds():
    got = decide(RedisProbe("redis://h:6379", True, 1), [SeedProbe("a:1", UP, node_name="hub1")], V)
    assert got.protocol == "redis_distributed"


def test_a_live_seed_is_chosen_and_the_line_counts_the_seeds():
    seeds = [SeedProbe("10.0.0.5:9901", UP, ms=2, node_name="hub1", version=V),
             SeedProbe("10.0.0.6:9901", SILENT, error="connection refused")]
    got = decide(None, seeds, V)
    assert got == Choice("grpc_mesh", "hybrid chose grpc_mesh: seed 10.0.0.5:9901 (hub1) answered; 1 of 2 seeds up")


def test_the_first_live_seed_in_configured_order_is_named():
    seeds = [SeedProbe("a:1", SILENT), SeedProbe("b:2", UP, node_name="n2"), SeedProbe("c:3", UP, node_name="n3")]
    assert decide(None, seeds, V).reason == "hybrid chose grpc_mesh: seed b:2 (n2) answered; 2 of 3 seeds up"


def test_grpc_chosen_over_a_dead_redis_says_the_redis_is_dead():
    got = decide(RedisProbe("redis://r:6379/0", False, error="connection refused"), [SeedProbe("a:1", UP)], V)
    assert got == Choice("grpc_mesh", "hybrid chose grpc_mesh: seed a:1 answered; 1 of 1 seed up; "
                                      "redis://r:6379/0 did not answer (connection refused)")


def test_a_seed_speaking_another_version_does_not_count_and_the_line_says_so():
    got = decide(None, [SeedProbe("a:1", OTHER, node_name="old", version=2)], V)
    assert got == Choice("sqlite_local", "hybrid chose sqlite_local: no redis.url configured; "
                                         "seed a:1 (old) speaks mesh protocol 2, this node 1: it does not count")


def test_another_version_is_named_next_to_a_live_seed():
    got = decide(None, [SeedProbe("a:1", UP), SeedProbe("b:2", OTHER, error="peer speaks mesh protocol 3")], V)
    assert got.protocol == "grpc_mesh"
    assert got.reason.endswith("1 of 2 seeds up; seed b:2 speaks another mesh protocol, this node 1: it does not count")


def test_a_dead_redis_and_no_seeds_names_the_url():
    got = decide(RedisProbe("redis://x:6379/0", False, error="connection refused"), [], V)
    assert got == Choice("sqlite_local", "hybrid chose sqlite_local: redis://x:6379/0 did not answer "
                                         "(connection refused); no grpc.seeds configured")


def test_everything_dead_names_everything():
    seeds = [SeedProbe("a:1", SILENT, error="connection refused"),
             SeedProbe("b:2", SILENT, error="no answer within 1 s"),
             SeedProbe("c:3", REFUSED, node_name="n3", error="UNAUTHENTICATED: bad api key")]
    got = decide(RedisProbe("redis://x", False, error="no answer within 1 s"), seeds, V)
    assert got == Choice("sqlite_local", "hybrid chose sqlite_local: redis://x did not answer (no answer within 1 s); "
                                         "seeds a:1, b:2 did not answer (connection refused, no answer within 1 s); "
                                         "seed c:3 (n3) refused the handshake (UNAUTHENTICATED: bad api key)")


def test_one_silent_seed_is_singular():
    assert decide(None, [SeedProbe("a:1", SILENT)], V).reason == \
        "hybrid chose sqlite_local: no redis.url configured; seed a:1 did not answer"


redis_probes = st.none() | st.builds(RedisProbe, url=st.just("redis://h"), answered=st.booleans(),
                                     ms=st.floats(0, 1000), error=st.sampled_from(["", "connection refused"]))
seed_probes = st.lists(st.builds(SeedProbe, seed=st.sampled_from(["a:1", "b:2", "c:3"]),
                                 outcome=st.sampled_from(list(SeedOutcome)), node_name=st.sampled_from(["", "hub"]),
                                 version=st.integers(0, 3)), max_size=4)


@given(redis_probes, seed_probes)
def test_never_a_medium_that_did_not_answer(redis, seeds):
    got = decide(redis, seeds, V)
    assert "\n" not in got.reason and got.reason.startswith(f"hybrid chose {got.protocol}: ")
    if got.protocol == "redis_distributed":
        assert redis is not None and redis.answered
    elif got.protocol == "grpc_mesh":
        assert not (redis is not None and redis.answered)
        assert any(s.outcome is SeedOutcome.ANSWERED for s in seeds)
    else:
        assert got.protocol == "sqlite_local"
        assert not (redis is not None and redis.answered)
        assert not any(s.outcome is SeedOutcome.ANSWERED for s in seeds)
        for s in seeds:  # every seed that was tried is accounted for
            assert s.seed in got.reason
