"""``bench routers`` without Ray: the two apps differ in one setting; bad input is refused."""

import pytest

from slidingserve.metrics.records import RequestRecord
from slidingserve.metrics.summary import summarize
from slidingserve.serve.bench_http import BenchConfig
from slidingserve.serve.bench_routers import ROUTERS, RouterBenchConfig, app_args, rows
from slidingserve.serve.cli import load_serve_file, repo_file
from slidingserve.serve.config import load_serve_config
from slidingserve.slo.tiers import load_tiers

WORKLOAD = BenchConfig(url="http://127.0.0.1", rate=1.0, duration_s=5.0)


def test_the_apps_differ_only_in_the_router():
    _, base = load_serve_file(repo_file("deploy", "local.yaml"))
    slack, pow2 = (load_serve_config(app_args(base, r, 2)).model_dump() for r in ROUTERS)
    assert slack["router"]["enabled"] and not pow2["router"]["enabled"]
    assert slack["num_replicas"] == pow2["num_replicas"] == 2
    slack["router"].pop("enabled"), pow2["router"].pop("enabled")
    assert slack == pow2
    assert base["router"]["enabled"]  # the base config is not modified


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"routers": ("slack", "random")}, "routers: unknown"),
    ({"routers": ()}, "routers"),
    ({"seeds": ()}, "seeds"),
    ({"replicas": 1}, "replicas"),
])
def test_bad_comparison_is_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        RouterBenchConfig(WORKLOAD, **kwargs)


def test_rows_pool_seeds_and_count_refusals_per_tier():
    tiers = load_tiers(None)
    ok = RequestRecord(arrival_s=0.0, tier="interactive", first_token_s=0.1, last_token_s=0.13,
                       n_out=4, finished=True, expected_tokens=4)
    refused = RequestRecord(arrival_s=0.0, tier="batch", first_token_s=None, last_token_s=None,
                            n_out=0, finished=False, expected_tokens=4)
    run = summarize([ok, refused], tiers, 1.0)
    pooled = summarize([ok, refused, ok, refused], tiers, 2.0)
    pooled["rejected_429_by_tier"] = {"batch": 2}
    table = rows({"routers": {"slack": {"pooled": pooled, "runs": [run, run]}}})
    by_tier = {r[1]: r for r in table}
    assert set(by_tier) == {"interactive", "batch", "all"}  # tiers without requests left out
    assert by_tier["batch"][2:6] == ["2", "2", "0.000", "0.000 0.000"]
    assert by_tier["all"][2:6] == ["4", "2", "0.500", "0.500 0.500"]
    assert by_tier["interactive"][6] == "0.100"
