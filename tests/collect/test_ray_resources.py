"""The Ray engine on a local Ray instance (2 CPUs, no GPU): a GPU fraction that no node can hold is
refused at start with what to do, instead of actors pending forever; workers that stay unscheduled
(the cluster's CPUs held by another job) time out with a message."""

import time
from pathlib import Path

import pytest

from weightcast.collect import CollectError, load_collect_config, run_collection

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "configs" / "collect" / "debug.yaml"


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def _collect(tmp_path, *overrides):
    config = load_collect_config(DEBUG, [f"out_dir={tmp_path}", "engine.name=ray", *overrides])
    return run_collection(config, progress=False, echo=lambda line: None)


@pytest.mark.slow
def test_gpu_fraction_without_gpus_is_refused_at_start(ray_instance, tmp_path):
    start = time.monotonic()
    with pytest.raises(CollectError, match=r"engine.num_gpus=0.5: no node .* has 0.5 GPU \(cluster: CPU=2\); "
                                           r"set engine.num_gpus=0"):
        _collect(tmp_path, "engine.num_gpus=0.5")
    assert time.monotonic() - start < 60  # refused, not left pending (a generous bound, not a timing test)
    assert not list(tmp_path.rglob("*.tar"))  # nothing ran
    with pytest.raises(CollectError, match=r"engine.num_cpus=4: no node .* has 4 CPU"):
        _collect(tmp_path, "engine.num_cpus=4")


@pytest.mark.slow
def test_workers_left_unscheduled_time_out_with_a_message(ray_instance, tmp_path):
    ray = ray_instance

    @ray.remote(num_cpus=2)
    class Hog:  # another job holding every CPU of the cluster
        def ready(self):
            return True

    hog = Hog.remote()
    ray.get(hog.ready.remote())
    try:
        message = r"no Ray worker was scheduled within engine.schedule_timeout_s=2 s: each asks for 1 CPU"
        with pytest.raises(CollectError, match=message):
            _collect(tmp_path, "engine.schedule_timeout_s=2", "engine.workers=1")
    finally:
        ray.kill(hog)
