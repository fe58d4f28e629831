"""Every plot function runs on small data and writes non-empty PNG and SVG files (Agg backend)."""

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from analysis import plots  # noqa: E402
from d2ft import ModelSpec, Op, Plan  # noqa: E402
from d2ft.catalogue import cluster_preset  # noqa: E402
from simulator import simulate, sweep  # noqa: E402


def _check(fig, tmp_path, name):
    for path in plots.save(fig, tmp_path / name):
        assert path.stat().st_size > 1000, path


def test_every_plot_writes_an_image(tmp_path):
    model, cluster = ModelSpec.from_timm("vit_tiny_patch16_224"), cluster_preset("lan-4x3090")
    results = pd.DataFrame({"strategy": ["full", "hybrid", "random"], "accuracy": [0.9, 0.89, 0.85],
                            "compute_saving": [0.0, 0.4, 0.4]})
    _check(plots.accuracy_vs_saving(results), tmp_path, "accuracy")
    seeds = results.assign(spread=[0.01, 0.02, None], comm_keep=[None, 0.5, None])
    fig = plots.accuracy_vs_saving(pd.concat([seeds, seeds.assign(compute_saving=[0.0, 0.2, 0.6], comm_keep=None)]))
    assert "comm keep 0.5" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    _check(fig, tmp_path, "accuracy-seeds")
    _check(plots.predicted_vs_measured([1.0, 2.0, 3.0], [1.1, 1.9, 3.3], "step time", "s"), tmp_path, "pvm")
    fig = plots.predicted_vs_measured([1.0, 2.0, 3.0], [1.1, 1.9, 3.3], "step time", "s", groups=["a", "b", "a"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][-2:] == ["a", "b"]
    _check(fig, tmp_path, "pvm-groups")
    plan = Plan.uniform(model, cluster, Op.FULL, 1, 2)
    trace = simulate(plan, model, cluster)
    _check(plots.timelines({"simulated": trace, "again": trace}), tmp_path, "timeline")
    _check(plots.device_loads({"balanced": [1.0, 1.0, 1.0, 1.0], "even": [0.2, 1.0, 2.0, 4.0]},
                              cluster.device_names), tmp_path, "loads")
    _check(plots.op_mix([plan.with_ops([[[Op.FULL, Op.FORWARD_ONLY, Op.SKIP]] * 12])]), tmp_path, "opmix")
    records = pd.DataFrame(sweep(["vit_tiny_patch16_224"], ["lan-4x3090"], strategies=["full", "hybrid"],
                                 micro_batches=[1], link_bandwidths=[1.25e8, 1.25e9]))
    _check(plots.sweep_curves(records), tmp_path, "sweep")
    records = pd.DataFrame(sweep(["vit_tiny_patch16_224"], ["lan-4x3090", "dgx-a100"], strategies=["full", "hybrid"],
                                 micro_batches=[2], device_counts=[2, 4]))
    records["compute_share"] = records["max_busy_s"] / records["step_time_s"]
    _check(plots.scale_study(records), tmp_path, "scale")


def test_training_plots_write_images(tmp_path):
    steps = pd.DataFrame({"step": range(6), "loss": [2.3, 2.0, 1.7, 1.5, 1.4, 1.3],
                          "top1": [None, None, 0.5, None, None, 0.7]})
    _check(plots.training_curves({"full": steps, "hybrid keep 0.6": steps.assign(loss=steps["loss"] + 0.1)}),
           tmp_path, "training")
    grid = [[Op.FULL, Op.SKIP], [Op.FORWARD_ONLY, Op.FULL]]
    plan = Plan(["c", "w"], [[1, 1], [0, 1]], [grid, grid], 2)
    later = plan.with_ops([[[Op.SKIP, Op.FULL], [Op.FULL, Op.FULL]]] * 2)
    _check(plots.op_mix_over_training([(0, plan), (3, later)], total_steps=6), tmp_path, "opmix-time")


def test_the_same_figure_saves_to_the_same_bytes(tmp_path):
    """No creation date and fixed SVG ids: a regenerated results page changes only the figures whose data did."""
    results = pd.DataFrame({"strategy": ["full", "hybrid"], "accuracy": [0.9, 0.89], "compute_saving": [0.0, 0.4]})
    first = [p.read_bytes() for p in plots.save(plots.accuracy_vs_saving(results), tmp_path / "a")]
    again = [p.read_bytes() for p in plots.save(plots.accuracy_vs_saving(results), tmp_path / "b")]
    assert first == again
