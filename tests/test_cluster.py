"""Devices, links, clusters, the catalogue and presets."""

import math

import pytest

from d2ft import Cluster, DeviceSpec, LinkSpec
from d2ft import catalogue
from d2ft.units import GB, us
from tests.conftest import simple_device


def test_catalogue_size_and_sources():
    assert len(catalogue.DEVICES) >= 12 and len(catalogue.LINKS) >= 6
    for key, spec in {**catalogue.DEVICES, **catalogue.LINKS}.items():
        assert spec.source, f"{key} has no source"
    names = " ".join(d.name for d in catalogue.DEVICES.values())
    for kind in ("H100", "A100", "RTX", "Jetson", "EPYC", "Xeon"):
        assert kind in names
    links = " ".join(l.name for l in catalogue.LINKS.values())
    for kind in ("PCIe 3.0", "PCIe 4.0", "NVLink", "1 Gigabit", "10 Gigabit", "100 Gigabit", "Wi-Fi"):
        assert kind in links


def test_spec_sheet_figures():
    a100 = catalogue.device("a100-sxm4-80gb")
    assert (a100.peak_flops, a100.peak_flops_fp32, a100.mem_bandwidth) == (312e12, 156e12, 2039e9)
    assert catalogue.link("pcie4-x16").bandwidth == 31.5 * GB
    assert catalogue.link("10gbe").bandwidth == 1.25e9


@pytest.mark.parametrize("preset", sorted(catalogue.PRESETS))
def test_presets_build(preset):
    c = catalogue.cluster_preset(preset)
    assert c.coordinator in c.device_names
    for name in c.device_names:
        assert c.bottleneck_bandwidth(c.coordinator, name) > 0


def test_heterogeneous_cluster_is_first_class():
    c = catalogue.cluster_preset("mixed-4")
    assert len({spec.name for _, spec in c.devices}) == 4
    slow = catalogue.cluster_preset("emulated-1124")
    assert slow.device(3).peak_flops == pytest.approx(slow.device(0).peak_flops / 4)
    assert "emulated" in slow.device(3).name


def test_roofline():
    d = DeviceSpec("d", 1e12, 5e11, 1e11, 1e9, efficiency=0.5, task_overhead_s=1 * us)
    assert d.compute_time(1e9, 0, dtype_bytes=2) == pytest.approx(1e-6 + 1e9 / 5e11)  # compute-bound
    assert d.compute_time(1e9, 0, dtype_bytes=4) == pytest.approx(1e-6 + 1e9 / 2.5e11)
    assert d.compute_time(1e3, 1e9) == pytest.approx(1e-6 + 1e9 / 1e11)  # memory-bound
    assert d.compute_time(0, 0) == 0


def test_routes_and_bottleneck():
    fast, slow = LinkSpec("fast", 100 * GB, 1 * us), LinkSpec("slow", 1 * GB, 10 * us)
    c = Cluster(
        devices=(("a", simple_device()), ("b", simple_device()), ("c", simple_device())),
        links=(("a", "sw", fast), ("sw", "b", fast), ("b", "c", slow)),
        coordinator="a",
        switches=("sw",),
    )
    assert c.route("a", "c") == ["a", "sw", "b", "c"]
    assert c.bottleneck_bandwidth("a", "c") == 1 * GB
    assert c.latency("a", "c") == pytest.approx(12 * us)
    assert c.transfer_time("a", "c", 1e9) == pytest.approx(12 * us + 1.0)
    assert c.bottleneck_bandwidth("a", "a") == math.inf
    assert c.graph.nodes["sw"]["kind"] == "switch"


def test_ring():
    c = Cluster.ring({f"n{i}": simple_device() for i in range(4)}, catalogue.link("1gbe"))
    assert len(c.links) == 4
    assert len(c.route("n0", "n2")) == 3


def test_json_round_trip_and_catalogue_references():
    c = catalogue.cluster_preset("edge-orin-wifi")
    assert Cluster.from_json(c.to_json()) == c
    raw = {
        "name": "mine",
        "coordinator": "x",
        "devices": {"x": "h100-sxm", "y": {"catalogue": "t4", "slowdown": 2}},
        "links": [{"a": "x", "b": "y", "link": "100gbe"}],
    }
    c2 = Cluster.from_dict(raw)
    assert c2.device("y").peak_flops == catalogue.device("t4").peak_flops / 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="bandwidth must be a positive number"):
        LinkSpec("l", bandwidth=-1.0)
    with pytest.raises(KeyError, match="unknown device 'a100' \\(did you mean"):
        catalogue.device("a100")
    with pytest.raises(ValueError, match="efficiency must be in"):
        DeviceSpec("d", 1, 1, 1, 1, efficiency=1.5)
    with pytest.raises(ValueError) as e:
        Cluster(devices=(("a", simple_device()), ("b", simple_device())), links=(("a", "zz", catalogue.link("1gbe")),),
                coordinator="q")
    msg = str(e.value)
    assert "unknown node 'zz'" in msg and "coordinator 'q' is not one of the devices" in msg
    with pytest.raises(ValueError, match="not connected to the coordinator: b"):
        Cluster(devices=(("a", simple_device()), ("b", simple_device())), links=(), coordinator="a")
    with pytest.raises(KeyError, match="unknown cluster preset"):
        catalogue.cluster_preset("dgx-a1000")
