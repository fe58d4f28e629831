"""A catalogue of real devices and links, with figures from public spec sheets, and cluster presets.

The devices and links themselves (``DEVICES``, ``LINKS``, ``device``, ``link``) live in
``d2ft.hardware`` with their sources; this module adds the cluster presets built from them.

Not modelled: see ``d2ft.hardware`` (clocks, power limits, reserved memory, NUMA).
"""

from __future__ import annotations

from typing import Callable

from .cluster import Cluster, Host
from .errors import unknown_name
from .hardware import DEVICES, LINKS, device, link, resolve_device, resolve_link


# ---- cluster presets: plain functions, registered by name ----------------------------
def _uniform(kind: str, n: int, link_key: str, name: str, prefix: str = "gpu", one_host: bool = False) -> Cluster:
    """``n`` devices of ``kind`` on one switch; ``one_host``: all in one machine (GPUs: no shared cores),
    else one machine each (a host of its own)."""
    cluster = Cluster.star([(f"{prefix}{i}", device(kind)) for i in range(n)], link(link_key), name=name)
    return cluster.with_hosts([Host(name, cluster.device_names, None)]) if one_host else cluster


PRESETS: dict[str, Callable[[], Cluster]] = {
    "dgx-a100": lambda: _uniform("a100-sxm4-80gb", 8, "nvlink3", "dgx-a100", one_host=True),
    "dgx-h100": lambda: _uniform("h100-sxm", 8, "nvlink4", "dgx-h100", one_host=True),
    "pcie-4x4090": lambda: _uniform("rtx-4090", 4, "pcie4-x16", "pcie-4x4090", one_host=True),
    "lan-4x3090": lambda: _uniform("rtx-3090", 4, "10gbe", "lan-4x3090", prefix="node"),
    "lan-8xl4": lambda: _uniform("l4", 8, "25gbe", "lan-8xl4", prefix="node"),
    "edge-orin-wifi": lambda: Cluster.star(
        [("agx", device("jetson-agx-orin-64gb"))] + [(f"nano{i}", device("jetson-orin-nano-8gb")) for i in range(4)],
        link("wifi6"),
        name="edge-orin-wifi",
    ),
    "mixed-4": lambda: Cluster.star(
        [("h100", device("h100-sxm")), ("a100", device("a100-sxm4-80gb")), ("v100", device("v100-sxm2-32gb")), ("t4", device("t4"))],
        link("100gbe"),
        name="mixed-4",
    ),
    "emulated-1124": lambda: _uniform("rtx-4090", 4, "10gbe", "emulated-1124").with_slowdown([1, 1, 2, 4]),
}


def cluster_preset(name: str) -> Cluster:
    """A named cluster preset (``d2ft.catalogue.PRESETS``)."""
    if name not in PRESETS:
        raise unknown_name("cluster preset", name, PRESETS)
    return PRESETS[name]()


__all__ = ["DEVICES", "LINKS", "PRESETS", "cluster_preset", "device", "link", "resolve_device", "resolve_link"]
