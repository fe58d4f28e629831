"""``d2ft calibrate``: measure this machine's ranks and write a cluster the simulator loads.

A rank is priced by the same kernel model as a GPU (``d2ft.kernels``): a task is the sum of its
kernels, each a fixed time plus max(FLOP / rate, bytes / bandwidth), with one "SM" (the rank's one
thread) and no tile quantisation (``gemm_tile`` 1), attention fused (the runtime calls
``scaled_dot_product_attention``). Its constants are fitted to measured task times
(``d2ft.kernelfit.fit_constants``): the rate of a matrix product, the fixed time per GEMM kernel
(``kernel_launch_s``: the framework's dispatch of the product with the operators the runtime runs
around it, stacking the heads' weights, reshapes, the bias), per elementwise kernel
(``elementwise_overhead_s``) and the backward's rate (``backward_efficiency``).

Compute: matrix products of subnet-like shapes at several sizes, one thread per rank as
the runtime uses, timed (median of repeats), each one kernel. Memory bandwidth: copies of a 64 MiB
tensor (read + write). Link: ping-pong between two ranks over gloo at sizes from 1 KiB to
8 MiB, fitted to one-way t = latency + bytes / bandwidth, with all ``nproc`` ranks running
and rank 0 talking to each of the others in turn, as the coordinator does.

With a model (``calibrate(nproc, model_job=..., micro_batch_size=b)``, ``d2ft calibrate
--model``), compute is fitted to the runtime's own tasks instead: one block's subnet
halves (attention, MLP slice) for 1 to H heads at micro-batch size b, forward (with
autograd recording, as a FULL subnet runs) and backward timed separately, and elementwise tasks (a
LayerNorm, a residual add at the micro-batch's activation size), all fitted at once, each task as
the cost model's kernels of it. Small tasks of small models are far from GEMM speed (framework
overhead per operator), which the GEMM fit misses.

Ranks sharing cores (``measure_core_sharing``): 1..nproc processes repeat one GEMM together; the
largest total speed-up over one alone, rounded, is the host's usable cores C, written as one
``Host`` of every rank with ``cores`` C, which the simulator schedules as a pool (at most C tasks at
once, each at full speed). The measurement decides that model: on this 2-core VM a task's median
latency stayed within 16% of alone with 4 ranks computing, while total throughput stopped at about C
cores (the OS gives each rank time slices longer than a task); ``raw["core_sharing"]["model"]``
records which it saw. What all nproc ranks computing together lose beyond C cores (context switches,
shared caches: total throughput at nproc under C) slows every rank's spec alike.

Not measured: contention for memory bandwidth beyond that, the cores that messaging takes (the
simulator assumes one per message between two ranks of the host), and other devices than the CPU
(on a GPU machine, run the runtime's own timings).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ft import kernels
from d2ft.kernelfit import fit_constants
from d2ft.cluster import Cluster, DeviceSpec, Host, LinkSpec

from .provenance import machine
from .run import free_port
from .shard import BlockShard
from .spec import model_spec_from_timm
from .weights import build_model

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
    """GEMM and copy timings of this process, the GEMMs fitted as one kernel each (``fit``):
    {"points": [(m, k, n, s)], "mem_bandwidth", "rate", "kernel_launch_s", ...}."""
    torch.set_num_threads(threads)
    src = torch.empty(16 * 2**20)  # 64 MiB of float32
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() * src.element_size() / _median_time(lambda: dst.copy_(src), repeat=5)
    points = []
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        points.append((m, k, n, _median_time(lambda: a @ b)))
    fitted = fit([([kernels.gemm(m, n, k)], False, t) for m, k, n, t in points], bandwidth)
    return {"points": points, "mem_bandwidth": bandwidth, **fitted}


def fit(tasks, mem_bandwidth: float) -> dict:
    """``d2ft.kernelfit.fit_constants`` of (kernels, backward, s) tasks on one CPU thread, as a dict."""
    return fit_constants(tasks, mem_bandwidth, dtype_bytes=4, sms=1, tile=1)._asdict()


def measure_tasks(model_job, micro_batch_size: int, mem_bandwidth: float, repeat: int = 15) -> dict:
    """Forward and backward times of the subnet tasks of ``model_job``'s model (a ``runtime.job.Job``;
    its weights are not read) and of its elementwise tasks in this process (one thread), fitted as
    their kernels (``fit``) with ``mem_bandwidth`` (B/s, measured).

    Returns {"points": [(phase, part, heads, FLOP, s)], "rate", "kernel_launch_s", "elementwise_overhead_s",
    "backward_efficiency", "median_abs_error", ...}.
    """
    torch.set_num_threads(1)
    model = build_model(model_job.replace(checkpoint="none"))
    spec = model_spec_from_timm(model, name=model_job.model)
    H, b = spec.heads, micro_batch_size
    shard = BlockShard(model.blocks[0], list(range(H)))
    x = torch.randn(b, model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim)
    work = {"attn": spec.subnet_attn, "mlp": spec.subnet_mlp}
    points = []
    for n in range(1, H + 1) if H <= 6 else sorted({1, H // 4, H // 2, 3 * H // 4, H}):
        heads = list(range(n))
        for half in ("attn", "mlp"):
            y = x.clone().requires_grad_()
            fn = getattr(shard, half)
            t_f = _median_time(lambda: fn(y, heads), repeat)
            grad = torch.ones_like(x)
            t_fb = _median_time(lambda: fn(y, heads).backward(grad), repeat)
            points.append(("fwd", half, n, n * b * work[half].fwd_flop, t_f))
            points.append(("bwd", half, n, n * b * work[half].bwd_flop, max(t_fb - t_f, 1e-9)))
    norm = model.blocks[0].norm1
    points.append(("fwd", "norm", 0, 0.0, _median_time(lambda: norm(x), repeat)))
    points.append(("fwd", "add", 0, 0.0, _median_time(lambda: x + x, repeat)))
    tasks = [(kernels.task_kernels(spec, part, phase, n, b, fused=True), phase == "bwd", t)
             for phase, part, n, _, t in points]
    return {"points": points, **fit(tasks, mem_bandwidth), "micro_batch_size": b, "model": model_job.model}


SHARING_SHAPE = (394, 768, 192)
"""The GEMM each rank repeats while measuring core sharing: one MLP slice of a ViT-B head at 2 images."""


def _share_worker(rank: int, barrier, seconds: float, results) -> None:
    """One of R ranks computing at once: repeats the ``SHARING_SHAPE`` GEMM for ``seconds`` after a common
    start, and reports (rank, GEMMs per second, median latency of one GEMM, s)."""
    torch.set_num_threads(1)
    m, k, n = SHARING_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(5):
        a @ b
    barrier.wait()
    latencies, t0 = [], time.perf_counter()
    while (now := time.perf_counter()) - t0 < seconds:
        a @ b
        latencies.append(time.perf_counter() - now)
    results.append((rank, len(latencies) / (time.perf_counter() - t0), statistics.median(latencies)))


def measure_core_sharing(max_ranks: int, seconds: float = 1.0) -> dict:
    """How this machine's throughput falls as 1..``max_ranks`` ranks compute together (one thread each).

    For each R, R processes repeat the same GEMM for ``seconds`` from a common start. Returns {"rows":
    [{"ranks", "speedup" (total GEMMs/s over one rank's alone), "rank_speed" (a rank's GEMMs/s over
    alone, the mean), "task_latency" (a GEMM's median latency over alone)}], "usable_cores", "model"}.
    ``usable_cores`` is the largest total speed-up, rounded (at least 1); ``model`` says how ranks beyond
    them share: "pool" when a task still runs at about full speed and waits its turn (median latency
    under 1.5x alone), "sharing" when every task slows (processor sharing by the OS scheduler).
    """
    ctx = mp.get_context("spawn")
    rows, alone = [], None
    for r in range(1, max(max_ranks, 1) + 1):
        manager = ctx.Manager()
        results, barrier = manager.list(), manager.Barrier(r)
        procs = [ctx.Process(target=_share_worker, args=(i, barrier, seconds, results)) for i in range(r)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        got = list(results)
        manager.shutdown()
        if len(got) != r or any(p.exitcode for p in procs):
            raise RuntimeError(f"measuring core sharing: {r - len(got)} of {r} ranks failed")
        rates, lats = [g[1] for g in got], [g[2] for g in got]
        alone = alone or (rates[0], lats[0])
        rows.append({"ranks": r, "speedup": sum(rates) / alone[0], "rank_speed": statistics.fmean(rates) / alone[0],
                     "task_latency": statistics.median(lats) / alone[1]})
    cores = max(1, round(max(row["speedup"] for row in rows)))
    over = [row for row in rows if row["ranks"] > cores]
    model = "sharing" if over and over[-1]["task_latency"] >= 1.5 else "pool"
    return {"rows": rows, "usable_cores": cores, "model": model, "shape": list(SHARING_SHAPE), "seconds": seconds}


def _pingpong_rows(rank: int, world: int, peers: list[int]) -> list[tuple[int, float]]:
    """(bytes, one-way s) per size of ``SIZES``: rank 0 sends to and hears back from each of ``peers`` in
    turn (every rank of the group takes part in the barriers); the median of 10 timed rounds."""
    rows = []
    for size in SIZES:
        buf = torch.zeros(size // 4)
        times = []
        for i in range(12):
            dist.barrier()
            t0 = time.perf_counter()
            for peer in peers:
                if rank == 0:
                    dist.send(buf, peer)
                    dist.recv(buf, peer)
                elif rank == peer:
                    dist.recv(buf, 0)
                    dist.send(buf, 0)
            if i >= 2:
                times.append((time.perf_counter() - t0) / (2 * len(peers)))
        rows.append((size, statistics.median(times)))
    return rows


def _pingpong(rank: int, world: int, init_method: str, results) -> None:
    """Rank 0 sends to and hears back from every other rank in turn, as the coordinator does."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        rows = _pingpong_rows(rank, world, list(range(1, world)))
        if rank == 0:
            results.extend(rows)
    finally:
        dist.destroy_process_group()


def _fit_link(points) -> dict:
    latency, slope = fit_line([p[0] for p in points], [p[1] for p in points])
    return {"points": points, "latency_s": max(latency, 0.0), "bandwidth": 1 / slope}


def measure_link(nproc: int = 2) -> dict:
    """One-way transfer times between local ranks, all ``nproc`` of them running (rank 0 talking to each
    in turn): {"points", "latency_s", "bandwidth"}."""
    nproc = max(nproc, 2)
    manager = mp.get_context("spawn").Manager()
    results = manager.list()
    mp.start_processes(_pingpong, args=(nproc, f"tcp://127.0.0.1:{free_port()}", results), nprocs=nproc, join=True,
                       start_method="spawn")
    return _fit_link(list(results))


def calibrate(nproc: int, model_job=None, micro_batch_size: int = 16, log=None,
              in_situ: bool = True) -> tuple[Cluster, dict]:
    """A star cluster of ``nproc`` measured ranks of this machine, and the raw measurements.

    With ``model_job`` (a ``runtime.job.Job`` naming the model and its arguments), compute is fitted to that
    model's subnet tasks at ``micro_batch_size`` (module docstring); else to GEMMs. ``in_situ`` (with a
    model): then refitted to the runtime's own all-FULL steps on the ``nproc`` ranks (``runtime.insitu``).
    ``log``, if given, takes one line as each measurement starts.
    """
    log = log or (lambda msg: None)
    in_situ = in_situ and model_job is not None
    cluster, raw = _calibrate(nproc, model_job, micro_batch_size, log, in_situ)
    if in_situ:
        from .insitu import fit_in_situ

        log(f"[{raw['stages']}/{raw['stages']}] fitting each role to the runtime's own all-FULL steps ...")
        raw["microbenchmark_profile"] = json.loads(cluster.to_json())  # what the fit started from
        cluster, raw["in_situ"] = fit_in_situ(cluster, model_job, micro_batch_size)
    return dataclasses.replace(cluster, measured_on=machine()), raw


def _calibrate(nproc: int, model_job, micro_batch_size: int, log, in_situ: bool) -> tuple[Cluster, dict]:
    """``calibrate`` before the in-situ fit: microbenchmarks, core sharing and the link."""
    stages = 1 + (model_job is not None) + 2 * (nproc > 1) + in_situ
    log(f"[1/{stages}] timing GEMMs and copies on one thread ...")
    dev = measure_device()
    raw = {"device": dev, "stages": stages}
    tasks = None
    if model_job is not None:
        log(f"[2/{stages}] timing {model_job.model}'s subnet tasks at micro-batch {micro_batch_size} ...")
        tasks = measure_tasks(model_job, micro_batch_size, dev["mem_bandwidth"])
        raw["tasks"] = tasks
    spec = _device_spec("this machine, one CPU thread per rank (d2ft calibrate)", dev, tasks, model_job,
                        micro_batch_size, _memory_bytes() / nproc)
    if nproc == 1:
        return Cluster(devices=(("rank0", spec),), links=(), coordinator="rank0", name="calibrated-1"), raw
    log(f"[{stages - 1 - in_situ}/{stages}] timing 1..{nproc} ranks computing together (core sharing) ...")
    sharing = measure_core_sharing(nproc)
    raw["core_sharing"] = sharing
    # The host's usable cores become a pool of the simulator's (Host.cores: tasks beyond them wait, which
    # is what the measurement shows: a task's latency stays near alone while the ranks' total throughput
    # stops growing); what all nproc ranks computing together lose beyond that (context switches, shared
    # caches) slows every rank alike.
    cores, together = sharing["usable_cores"], sharing["rows"][-1]
    loss = max(min(nproc, cores) / together["speedup"], 1.0)
    raw["cores"], raw["contention_slowdown"] = cores, loss
    if loss > 1:
        spec = dataclasses.replace(spec.scaled(loss), name=f"this machine, one CPU thread per rank, {nproc} ranks "
                                   f"sharing {cores} cores (x{loss:.3g} slower together; d2ft calibrate)")
    log(f"[{stages - in_situ}/{stages}] timing point-to-point messages between local ranks (gloo) ...")
    link = measure_link(nproc)
    raw["link"] = link
    # A route crosses two hops (rank -> switch -> rank): each carries half the measured latency.
    spec_link = LinkSpec("loopback TCP (d2ft calibrate)", bandwidth=link["bandwidth"], latency_s=link["latency_s"] / 2,
                         source="measured by d2ft calibrate: gloo ping-pong fitted to latency + bytes/bandwidth")
    names = [f"rank{i}" for i in range(nproc)]
    cluster = Cluster.star([(n, spec) for n in names], spec_link, name=f"calibrated-{nproc}")
    return cluster.with_hosts([Host(machine()["host"], tuple(names), cores)]), raw


def _device_spec(name: str, dev: dict, tasks: dict | None, model_job, micro_batch_size: int,
                 memory_bytes: float) -> DeviceSpec:
    """A kernel-model DeviceSpec (module docstring) from one rank's measurements: GEMMs
    (``measure_device``), or the model's own tasks."""
    fitted, source = dev, "measured by d2ft calibrate: GEMM timings fitted as one kernel each (d2ft.kernelfit)"
    if tasks is not None:
        fitted = tasks
        source = (f"measured by d2ft calibrate: {model_job.model} subnet and elementwise tasks at micro-batch "
                  f"{micro_batch_size} fitted as their kernels (d2ft.kernelfit), backward and elementwise apart")
    rate = fitted["rate"]
    return DeviceSpec(name, peak_flops=rate, peak_flops_fp32=rate, mem_bandwidth=dev["mem_bandwidth"],
                      memory_bytes=memory_bytes, efficiency=1.0, sm_count=1, gemm_tile=1, fused_attention=True,
                      kernel_launch_s=fitted["kernel_launch_s"], elementwise_overhead_s=fitted["elementwise_overhead_s"],
                      backward_efficiency=fitted["backward_efficiency"], source=source)


def calibrate_torchrun(model_job=None, micro_batch_size: int = 16, log=None) -> tuple[Cluster, dict] | None:
    """``d2ft calibrate`` under torchrun, across nodes: every rank times its own compute (all at once, as
    they run), then rank 0 ping-pongs with each other rank alone; rank 0 returns a star cluster with
    every rank's measured device and every link rank0 - rank k measured (a rank on another node sees its
    network, one on rank 0's node the loopback). The other ranks return None.

    Not measured: links between two workers (the star execution never uses them), and contention of
    several workers' messages on a shared uplink (each link is timed alone)."""
    import socket

    log = log or (lambda msg: None)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        log(f"[1/2] every rank of {world} timing its compute ...")
        dev = measure_device()
        tasks = measure_tasks(model_job, micro_batch_size, dev["mem_bandwidth"]) if model_job is not None else None
        mine = {"host": socket.gethostname(), "device": dev, "tasks": tasks, "memory_bytes": _memory_bytes()}
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        log(f"[2/2] timing the links from rank 0 to each of the {world - 1} other ranks, one at a time ...")
        links = {peer: _pingpong_rows(rank, world, [peer]) for peer in range(1, world)}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    per_host = {h: sum(1 for e in everyone if e["host"] == h) for h in {e["host"] for e in everyone}}
    devices = [(f"rank{k}", _device_spec(f"rank {k} on {e['host']} (d2ft calibrate under torchrun)", e["device"],
                                         e["tasks"], model_job, micro_batch_size, e["memory_bytes"] / per_host[e["host"]]))
               for k, e in enumerate(everyone)]
    fitted = {k: _fit_link(rows) for k, rows in links.items()}
    link_specs = [("rank0", f"rank{k}", LinkSpec(
        f"rank0 ({everyone[0]['host']}) - rank{k} ({everyone[k]['host']}), gloo (d2ft calibrate)",
        bandwidth=f["bandwidth"], latency_s=f["latency_s"],
        source="measured by d2ft calibrate under torchrun: gloo ping-pong fitted to latency + bytes/bandwidth"))
        for k, f in fitted.items()]
    cluster = Cluster(devices=tuple(devices), links=tuple(link_specs), coordinator="rank0",
                      name=f"calibrated-torchrun-{world}", measured_on={**machine(), "hosts": sorted(per_host)})
    return cluster, {"ranks": everyone, "links": {str(k): f for k, f in fitted.items()}, "hosts": per_host}


def _memory_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
