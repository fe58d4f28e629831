"""``d2ft calibrate``: measure this machine's ranks and write a cluster the simulator loads.

Compute: matrix products of subnet-like shapes at several sizes, one thread per rank as
the runtime uses, timed (median of repeats) and fitted by least squares to
t = overhead + FLOP / rate, which is ``DeviceSpec.compute_time`` with peak = rate,
efficiency = 1 and task_overhead_s = overhead. Memory bandwidth: copies of a 64 MiB
tensor (read + write). Link: ping-pong between two ranks over gloo at sizes from 1 KiB to
8 MiB, fitted to one-way t = latency + bytes / bandwidth.

Not measured: contention between ranks sharing cores or memory, and other devices than
the CPU (on a GPU machine, run the runtime's own timings).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ft.cluster import Cluster, DeviceSpec, LinkSpec

SHAPES = [(64, 64, 64), (128, 192, 64), (256, 384, 128), (512, 384, 384), (788, 768, 192), (1576, 768, 256)]
SIZES = [2**k for k in range(10, 24, 2)]  # bytes: 1 KiB .. 4 MiB


def _median_time(fn, repeat: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b x.

    >>> fit_line([1, 2, 3], [3, 5, 7])
    (1.0, 2.0)
    """
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, slope


def measure_device(threads: int = 1) -> dict:
    """GEMM and copy timings of this process: {"points": [(flop, s)], "rate", "overhead_s", "mem_bandwidth"}."""
    torch.set_num_threads(threads)
    points = []
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        points.append((2.0 * m * k * n, _median_time(lambda: a @ b)))
    overhead, slope = fit_line([p[0] for p in points], [p[1] for p in points])
    src = torch.empty(16 * 2**20)  # 64 MiB of float32
    dst = torch.empty_like(src)
    copy_s = _median_time(lambda: dst.copy_(src), repeat=5)
    return {"points": points, "rate": 1 / slope, "overhead_s": max(overhead, 0.0),
            "mem_bandwidth": 2 * src.numel() * src.element_size() / copy_s}


def _pingpong(rank: int, world: int, init_method: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        rows = []
        for size in SIZES:
            buf = torch.zeros(size // 4)
            times = []
            for i in range(12):
                dist.barrier()
                t0 = time.perf_counter()
                if rank == 0:
                    dist.send(buf, 1)
                    dist.recv(buf, 1)
                elif rank == 1:
                    dist.recv(buf, 0)
                    dist.send(buf, 0)
                if i >= 2:
                    times.append((time.perf_counter() - t0) / 2)
            rows.append((size, statistics.median(times)))
        if rank == 0:
            results.extend(rows)
    finally:
        dist.destroy_process_group()


def measure_link() -> dict:
    """One-way transfer times between two local ranks: {"points", "latency_s", "bandwidth"}."""
    from .run import free_port

    manager = mp.get_context("spawn").Manager()
    results = manager.list()
    mp.start_processes(_pingpong, args=(2, f"tcp://127.0.0.1:{free_port()}", results), nprocs=2, join=True,
                       start_method="spawn")
    points = list(results)
    latency, slope = fit_line([p[0] for p in points], [p[1] for p in points])
    return {"points": points, "latency_s": max(latency, 0.0), "bandwidth": 1 / slope}


def calibrate(nproc: int) -> tuple[Cluster, dict]:
    """A star cluster of ``nproc`` measured ranks of this machine, and the raw measurements."""
    dev = measure_device()
    spec = DeviceSpec(
        "this machine, one CPU thread per rank (d2ft calibrate)", peak_flops=dev["rate"], peak_flops_fp32=dev["rate"],
        mem_bandwidth=dev["mem_bandwidth"], memory_bytes=_memory_bytes() / nproc, efficiency=1.0,
        task_overhead_s=dev["overhead_s"], source="measured by d2ft calibrate: GEMM timings fitted to overhead + FLOP/rate",
    )
    raw = {"device": dev}
    if nproc > 1:
        link = measure_link()
        raw["link"] = link
        # A route crosses two hops (rank -> switch -> rank): each carries half the measured latency.
        spec_link = LinkSpec("loopback TCP (d2ft calibrate)", bandwidth=link["bandwidth"], latency_s=link["latency_s"] / 2,
                             source="measured by d2ft calibrate: gloo ping-pong fitted to latency + bytes/bandwidth")
        cluster = Cluster.star([(f"rank{i}", spec) for i in range(nproc)], spec_link, name=f"calibrated-{nproc}")
    else:
        cluster = Cluster(devices=(("rank0", spec),), links=(), coordinator="rank0", name="calibrated-1")
    return cluster, raw


def _memory_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
