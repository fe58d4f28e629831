"""The devices and links of public spec sheets, by key (``d2ft.catalogue`` re-exports them).

Peaks are dense (no structured sparsity). GPUs are priced kernel by kernel
(``d2ft.kernels``): their SM counts are spec-sheet figures, and two constants are fitted
to published measurements (``benchmarks/published.py``, calibration rows only): the
efficiency a large matrix product reaches and the fixed time per kernel (``KERNEL_FITS``:
RTX 3090, RTX 4090 and V100, the kinds with published rows). Every other GPU takes the
median of those fits, an assumption until measured: with both GeForce fits at an efficiency
of 1 (cards that hold clocks above their rated boost), that median is optimistic for a
data-centre card held at its rated clock. The catalogue's CPUs (whole chips) are priced as one
roofline per task, with ``efficiency`` (0.5: large-model training reaches about half of peak, e.g.
46.2% model FLOP utilisation for PaLM 540B, Chowdhery et al. 2022, Table 3) and
``task_overhead_s`` assumed; ``d2ft calibrate`` measures a machine's ranks and prices them by the
kernel model like a GPU. Link latencies are typical orders of magnitude, also not spec-sheet
figures; bandwidths are line rates after encoding.

GPU memory is binary (a "24GB" card holds 24 GiB: its DRAM is built of power-of-two chips), and a
GPU's peak-memory estimates include ``framework_bytes`` (``FRAMEWORK_FITS``). Not modelled: clock
boost and throttling (a card that holds a clock above its rated boost fits an efficiency near 1),
power limits, and NUMA effects on CPUs.
"""

from __future__ import annotations

import dataclasses
import statistics

from .device import DeviceSpec, LinkSpec
from .errors import unknown_name
from .units import GB, GiB, TFLOPS, GFLOPS, Gbit, Mbit, ms, us

KERNEL_FITS: dict[str, tuple[float, float]] = {
    "rtx-3090": (1.0, 19e-6),
    "rtx-4090": (1.0, 17e-6),
    "v100-sxm2-32gb": (0.86, 21e-6),
}
"""(efficiency, kernel_launch_s) per GPU kind: ``benchmarks/published.py --fit`` on its calibration rows
(the median |log error| over a grid; tests/test_published.py checks the two agree)."""
_MEDIAN_FIT = tuple(statistics.median(f[i] for f in KERNEL_FITS.values()) for i in range(2))

FRAMEWORK_FITS: dict[str, float] = {
    "rtx-3090": 3.625 * GiB,
}
"""``DeviceSpec.framework_bytes`` per GPU kind with published memory brackets: ``benchmarks/published.py
--memory`` on its calibration brackets (the batch sizes timm's training benchmark could and could not fit,
PyTorch 1.12; tests/test_published.py checks the two agree). It holds the CUDA context and the caching
allocator's reserve, and absorbs what the memory model leaves out (a backward's transient gradients,
library workspaces). Every other GPU takes it in proportion to its memory (3.625 GiB of 24): an assumption
until measured, on the reading that the allocator's reserve grows with the tensors a device holds."""
_FRAMEWORK_SHARE = FRAMEWORK_FITS["rtx-3090"] / (24 * GiB)


def _gpu(key: str, sms: int) -> dict:
    """Kernel-model fields of a GPU with ``sms`` streaming multiprocessors: its own fit, else the median."""
    efficiency, launch = KERNEL_FITS.get(key, _MEDIAN_FIT)
    return dict(sm_count=sms, efficiency=efficiency, kernel_launch_s=launch)


_CPU = dict(efficiency=0.5, task_overhead_s=5 * us)

DEVICES: dict[str, DeviceSpec] = {
    # Data-centre GPUs.
    "h200-sxm": DeviceSpec(
        "NVIDIA H200 SXM 141GB", 989 * TFLOPS, 494.7 * TFLOPS, 4.8e12, 141 * GB, **_gpu("h200-sxm", 132),
        source="NVIDIA H200 Tensor Core GPU datasheet (2024): BF16 1979 TFLOPS with sparsity, TF32 989 with sparsity, 4.8 TB/s HBM3e; 132 SMs (GH100 as in H100 SXM5: NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022)",
    ),
    "h100-sxm": DeviceSpec(
        "NVIDIA H100 SXM5 80GB", 989 * TFLOPS, 494.7 * TFLOPS, 3.35e12, 80 * GiB, **_gpu("h100-sxm", 132),
        source="NVIDIA H100 Tensor Core GPU datasheet (2023): BF16 1979 TFLOPS with sparsity, TF32 989 with sparsity, 3.35 TB/s HBM3; 132 SMs (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022)",
    ),
    "a100-sxm4-80gb": DeviceSpec(
        "NVIDIA A100 SXM4 80GB", 312 * TFLOPS, 156 * TFLOPS, 2039 * GB, 80 * GiB, **_gpu("a100-sxm4-80gb", 108),
        source="NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 312 TFLOPS, TF32 156 TFLOPS, 2039 GB/s HBM2e; 108 SMs (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020)",
    ),
    "a100-pcie-40gb": DeviceSpec(
        "NVIDIA A100 PCIe 40GB", 312 * TFLOPS, 156 * TFLOPS, 1555 * GB, 40 * GiB, **_gpu("a100-pcie-40gb", 108),
        source="NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 312 TFLOPS, TF32 156 TFLOPS, 1555 GB/s HBM2; 108 SMs (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020)",
    ),
    "v100-sxm2-32gb": DeviceSpec(
        "NVIDIA V100 SXM2 32GB", 125 * TFLOPS, 15.7 * TFLOPS, 900 * GB, 32 * GiB, **_gpu("v100-sxm2-32gb", 80),
        source="NVIDIA V100 Tensor Core GPU datasheet (2020): FP16 tensor 125 TFLOPS, FP32 15.7 TFLOPS, 900 GB/s HBM2; 80 SMs (NVIDIA Tesla V100 GPU Architecture whitepaper, 2017)",
    ),
    "l4": DeviceSpec(
        "NVIDIA L4 24GB", 121 * TFLOPS, 60 * TFLOPS, 300 * GB, 24 * GiB, **_gpu("l4", 58),
        source="NVIDIA L4 Tensor Core GPU datasheet (2023): FP16 242 TFLOPS with sparsity, TF32 120 with sparsity, 300 GB/s GDDR6; 58 SMs (7,424 CUDA cores at 128 per Ada SM: NVIDIA L4 datasheet and Ada whitepaper v2.1)",
    ),
    "t4": DeviceSpec(
        "NVIDIA T4 16GB", 65 * TFLOPS, 8.1 * TFLOPS, 320 * GB, 16 * GiB, **_gpu("t4", 40),
        source="NVIDIA T4 Tensor Core GPU datasheet (2019): FP16 mixed 65 TFLOPS, FP32 8.1 TFLOPS, 320 GB/s GDDR6; 40 SMs (2,560 CUDA cores at 64 per Turing SM: NVIDIA Turing GPU Architecture whitepaper, 2018)",
    ),
    # Consumer GPUs.
    "rtx-4090": DeviceSpec(
        "NVIDIA GeForce RTX 4090", 165.2 * TFLOPS, 82.6 * TFLOPS, 1008 * GB, 24 * GiB, **_gpu("rtx-4090", 128),
        source="NVIDIA Ada GPU architecture whitepaper v2.1 (2023), RTX 4090: FP16 tensor with FP32 accumulate 165.2 TFLOPS, TF32 82.6, 1008 GB/s; 128 SMs (same whitepaper)",
    ),
    "rtx-3090": DeviceSpec(
        "NVIDIA GeForce RTX 3090", 71 * TFLOPS, 35.6 * TFLOPS, 936 * GB, 24 * GiB, **_gpu("rtx-3090", 82),
        source="NVIDIA Ampere GA102 GPU architecture whitepaper v2 (2021), RTX 3090: FP16 tensor with FP32 accumulate 71 TFLOPS, TF32 35.6, 936 GB/s; 82 SMs (same whitepaper)",
    ),
    # Edge boards.
    "jetson-agx-orin-64gb": DeviceSpec(
        "NVIDIA Jetson AGX Orin 64GB", 42.5 * TFLOPS, 5.3 * TFLOPS, 204.8 * GB, 64 * GiB, **_gpu("jetson-agx-orin-64gb", 16),
        source="NVIDIA Jetson AGX Orin Series data sheet (2023): GPU 170 sparse INT8 TOPS = 42.5 dense FP16 TFLOPS, 5.3 FP32 TFLOPS, 204.8 GB/s LPDDR5; 16 SMs (2,048 CUDA cores at 128 per Ampere SM, same data sheet)",
    ),
    "jetson-orin-nano-8gb": DeviceSpec(
        "NVIDIA Jetson Orin Nano 8GB", 10 * TFLOPS, 1.28 * TFLOPS, 68 * GB, 8 * GiB, **_gpu("jetson-orin-nano-8gb", 8),
        source="NVIDIA Jetson Orin Nano Series data sheet (2023): 40 sparse INT8 TOPS = 10 dense FP16 TFLOPS, 1024 CUDA cores at 625 MHz, 68 GB/s LPDDR5; 8 SMs (1,024 CUDA cores at 128 per Ampere SM)",
    ),
    "jetson-nano": DeviceSpec(
        "NVIDIA Jetson Nano 4GB", 472 * GFLOPS, 236 * GFLOPS, 25.6 * GB, 4 * GiB, **_gpu("jetson-nano", 1),
        source="NVIDIA Jetson Nano module data sheet (2019): 472 GFLOPS FP16, 128 Maxwell cores, 25.6 GB/s LPDDR4; 1 SM (128 Maxwell cores)",
    ),
    "raspberry-pi-5": DeviceSpec(
        "Raspberry Pi 5 8GB (4x Cortex-A76, 2.4 GHz)", 307.2 * GFLOPS, 153.6 * GFLOPS, 17.1 * GB, 8 * GB, **_CPU,
        source="Raspberry Pi 5 product brief (2023): 4x A76 at 2.4 GHz, LPDDR4X-4267 (32-bit); Arm Cortex-A76 software optimisation guide: 2x128-bit FMA pipes = 16 FP32 FLOP/cycle",
    ),
    # Server CPUs.
    "epyc-9654": DeviceSpec(
        "AMD EPYC 9654 (96 cores)", 14.7 * TFLOPS, 7.37 * TFLOPS, 460.8 * GB, 384 * GiB, **_CPU,
        source="AMD EPYC 9004 product brief (2022): 96 Zen 4 cores, 2.4 GHz base, 12 channels DDR5-4800; 32 FP32 FLOP/cycle/core, BF16 dot products at twice that",
    ),
    "xeon-8480": DeviceSpec(
        "Intel Xeon Platinum 8480+ (56 cores)", 114.7 * TFLOPS, 7.17 * TFLOPS, 307.2 * GB, 512 * GiB, **_CPU,
        source="Intel ARK, Xeon Platinum 8480+ (2023): 56 cores, 2.0 GHz base, 8 channels DDR5-4800; AMX 1024 BF16 FLOP/cycle/core, AVX-512 64 FP32 FLOP/cycle/core",
    ),
}
DEVICES = {k: dataclasses.replace(d, framework_bytes=FRAMEWORK_FITS.get(k, _FRAMEWORK_SHARE * d.memory_bytes))
           if d.sm_count else d for k, d in DEVICES.items()}  # GPUs hold the framework's memory (FRAMEWORK_FITS)

LINKS: dict[str, LinkSpec] = {
    "pcie3-x16": LinkSpec("PCIe 3.0 x16", 15.75 * GB, 1 * us, source="PCI-SIG PCIe 3.0: 8 GT/s x 16 lanes, 128b/130b"),
    "pcie4-x16": LinkSpec("PCIe 4.0 x16", 31.5 * GB, 1 * us, source="PCI-SIG PCIe 4.0: 16 GT/s x 16 lanes, 128b/130b"),
    "pcie5-x16": LinkSpec("PCIe 5.0 x16", 63.0 * GB, 1 * us, source="PCI-SIG PCIe 5.0: 32 GT/s x 16 lanes, 128b/130b"),
    "nvlink3": LinkSpec("NVLink 3 (A100, 12 links)", 300 * GB, 2 * us, source="NVIDIA A100 datasheet: 600 GB/s NVLink, both directions"),
    "nvlink4": LinkSpec("NVLink 4 (H100, 18 links)", 450 * GB, 2 * us, source="NVIDIA H100 datasheet: 900 GB/s NVLink, both directions"),
    "1gbe": LinkSpec("1 Gigabit Ethernet", 1 * Gbit, 50 * us, source="IEEE 802.3ab: 1 Gb/s"),
    "10gbe": LinkSpec("10 Gigabit Ethernet", 10 * Gbit, 20 * us, source="IEEE 802.3ae: 10 Gb/s"),
    "25gbe": LinkSpec("25 Gigabit Ethernet", 25 * Gbit, 10 * us, source="IEEE 802.3by: 25 Gb/s"),
    "100gbe": LinkSpec("100 Gigabit Ethernet", 100 * Gbit, 5 * us, source="IEEE 802.3ba: 100 Gb/s"),
    "infiniband-ndr": LinkSpec("InfiniBand NDR 4x", 400 * Gbit, 2 * us, source="InfiniBand Trade Association roadmap: NDR 400 Gb/s per 4x port"),
    "wifi5": LinkSpec(
        "Wi-Fi 5 (802.11ac, 2x2, 80 MHz)", 866.7 * Mbit, 2 * ms, duplex=False,
        source="IEEE 802.11ac-2013: MCS 9, 2 spatial streams, 80 MHz, short GI = 866.7 Mb/s PHY rate",
    ),
    "wifi6": LinkSpec(
        "Wi-Fi 6 (802.11ax, 2x2, 80 MHz)", 1201 * Mbit, 2 * ms, duplex=False,
        source="IEEE 802.11ax-2021: MCS 11, 2 spatial streams, 80 MHz, 0.8 us GI = 1201 Mb/s PHY rate",
    ),
}


def device(name: str) -> DeviceSpec:
    """A catalogue device by key (``DEVICES``)."""
    if name not in DEVICES:
        raise unknown_name("device", name, DEVICES)
    return DEVICES[name]


def link(name: str) -> LinkSpec:
    """A catalogue link by key (``LINKS``)."""
    if name not in LINKS:
        raise unknown_name("link", name, LINKS)
    return LINKS[name]


def resolve_device(value) -> DeviceSpec:
    """A DeviceSpec from a catalogue key, ``{"catalogue": key, "slowdown": f}``, or a full spec dict."""
    if isinstance(value, DeviceSpec):
        return value
    if isinstance(value, str):
        return device(value)
    if isinstance(value, dict) and "catalogue" in value:
        extra = sorted(set(value) - {"catalogue", "slowdown"})
        if extra:
            raise ValueError(f"device {value!r}: unknown keys {extra}; with 'catalogue' only 'slowdown' is allowed")
        return device(value["catalogue"]).scaled(float(value.get("slowdown", 1)))
    return DeviceSpec.from_dict(value)


def resolve_link(value) -> LinkSpec:
    """A LinkSpec from a catalogue key or a full spec dict."""
    if isinstance(value, LinkSpec):
        return value
    if isinstance(value, str):
        return link(value)
    return LinkSpec.from_dict(value)
