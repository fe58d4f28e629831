"""``Analytical.evaluate_batch``: the analytical path's formulas (analytical.py) for N plans of one
placement at once, as array computations.

A device's share of a block depends only on how many of its subnets there run forward (n_f) and
backward (n_b). So each (plan, micro-batch, block, device) is one code n_f + (H + 1) n_b (one small
matrix product of the op levels with the placement), and everything ``Analytical.evaluate`` derives
from that share (task time plus the message legs per half, fan-out holds, the coordinator's
reductions, busy time, FLOP, bytes, messages) is one row of a table precomputed per device and code.
A plan then costs one gather of rows and a few reductions over its blocks. Not modelled beyond
``Analytical``: nothing; the figures equal ``evaluate``'s per plan to rounding (tests/test_simulator.py).
"""

from __future__ import annotations

import numpy as np

CHUNK = 64
"""Plans per array computation, so that their work arrays stay in cache: the fastest of 16 to 256 on this
project's benchmark machine (x86-64, 2 MiB of L2 per core; 32 and 128 within about 10% of it)."""


class Batched:
    """``evaluate_batch`` of one ``Analytical``: its per-code tables and work arrays, built once."""

    def __init__(self, an) -> None:
        self.an = an
        L, H, K = an.onehot.shape
        hv = an.halves
        self.onehot_t = np.ascontiguousarray(an.onehot.transpose(0, 2, 1), dtype=np.float32)  # (L, K, H)
        self.code_offset = (np.arange(K, dtype=np.float32) * (H + 1) ** 2)[None, :, None]  # device k's rows
        self.hold, self.reduce = 2 * hv, 2 * hv + 2  # columns of the shares table (``table``)
        # Per-block sums of the shares' maxima over devices and their sums over devices: all of a block,
        # then its backward part alone (the optimizer tail's).
        legs, fan = np.ones(2 * hv), hv * an.fan_factor
        bwd = np.r_[np.zeros(hv), np.ones(hv)]
        self.weights = (np.r_[legs, -fan, -fan, 0.0], np.r_[legs * 0, fan, fan, 1.0],
                        np.r_[bwd, 0.0, -fan, 0.0], np.r_[bwd * 0, 0.0, fan, 0.0])
        self.tables: dict[bool, tuple[np.ndarray, np.ndarray]] = {}
        self.work: tuple[np.ndarray, ...] | None = None

    def evaluate(self, levels, link_bandwidth=None) -> dict:
        """``Analytical.evaluate_batch`` (its docstring)."""
        an = self.an
        lv = np.asarray(levels)
        if lv.ndim != 4 or lv.shape[2:] != an.onehot.shape[:2]:
            raise ValueError(f"levels must be (plans, micro_batches, {an.onehot.shape[0]}, {an.onehot.shape[1]}), "
                             f"got {lv.shape}")
        if lv.size and (lv.min() < 0 or lv.max() > 2):
            raise ValueError(f"levels must be op levels 0 (SKIP), 1 (FORWARD_ONLY) or 2 (FULL), found {lv.min()} to "
                             f"{lv.max()}; Analytical.levels(plans) makes them")
        bw = None if link_bandwidth is None else np.asarray(link_bandwidth, dtype=float)
        if bw is not None and (bw.shape != (len(lv),) or not (bw > 0).all()):
            raise ValueError(f"link_bandwidth must give one bandwidth > 0 B/s per plan ({len(lv)}), "
                             f"got shape {bw.shape}")
        if len(lv) > CHUNK:
            parts = [self.evaluate(lv[i:i + CHUNK], None if bw is None else bw[i:i + CHUNK])
                     for i in range(0, len(lv), CHUNK)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        N, M, L, H = lv.shape
        K, c, hv = len(an.names), an.coord, an.halves
        shares, sums = self.table(scaled=bw is not None)
        x, y, code, index, rows, worst, total, dev_rows = self.buffers(N * M, shares.shape[1])
        # Codes per (block, device, plan x micro-batch): level 0, 1, 2 -> 0, 1, H + 2 is x (x H / 2 + 1 - H / 2),
        # summed over each device's heads (exact in float32: at most H (H + 2)).
        np.copyto(x, lv.reshape(N * M, L, H), casting="unsafe")
        np.multiply(x, H / 2, out=y)
        y += 1 - H / 2
        x *= y
        np.matmul(self.onehot_t, x.transpose(1, 2, 0), out=code)  # (L, K, N M)
        code += self.code_offset
        np.copyto(index, code, casting="unsafe")
        # Two gathers, each reduced over whole rows (reductions over a slice of the columns are strided and slow).
        np.take(shares, index, axis=0, out=rows)  # (L, K, N M, 2 halves + 3)
        rows.max(1, out=worst)  # (L, N M, .): over devices
        rows.sum(1, out=total)
        np.take(sums, index, axis=0, out=dev_rows)
        per_device = dev_rows.sum(0).reshape(K, N, M, 4).sum(2)  # (K, N, 4): over blocks and micro-batches
        busy, flop, mem, acts = (np.ascontiguousarray(per_device[..., i].T) for i in range(4))  # (N, K) each
        # Per block (L, N M): per phase and half the slowest active leg, plus the fan-out queue (per half: the
        # holds of all active messages but the longest) and the coordinator's reductions; for the optimizer
        # tail, the backward part alone in the last micro-batch (L, N).
        if bw is None:
            per_block = worst @ self.weights[0] + total @ self.weights[1]
            last_b = worst[:, M - 1::M] @ self.weights[2] + total[:, M - 1::M] @ self.weights[3]
        else:  # every link at bw[i]: a message's transfer a / bw[i] scales the 1 of the table's remote columns
            w = (an.wire / bw).repeat(M)  # (N M,): s per message and link
            phase = np.repeat([self.hold, self.hold + 1], hv)
            legs = (rows[..., :2 * hv] + 2 * w[:, None] * rows[..., phase]).max(1)  # (L, N M, 2 halves)
            fan = (total - worst)[..., self.hold:self.hold + 2] * (hv * an.fan_factor * w)[:, None]  # (L, N M, 2)
            per_block = legs.sum(-1) + fan.sum(-1) + total[..., self.reduce]
            last_b = legs[:, M - 1::M, hv:].sum(-1) + fan[:, M - 1::M, 1]
        busy[:, c] += M * an.coord_fixed + total[..., self.reduce].reshape(L, N, M).sum((0, 2))
        flop[:, c] += M * an.coord_flop
        mem[:, c] += M * an.coord_bytes + acts.sum(1) * hv * an.a
        full_any = (lv == 2).any(1).reshape(N, L * H).astype(float)  # FULL in any micro-batch
        trained = full_any @ an.onehot.reshape(L * H, K) * an.params_sub
        trained[:, c] += an.coord_params
        opt = self.optimizer_times(trained)
        busy += opt
        mem += trained * an.opt_per_param
        msgs = acts * hv * an.wire * an.remote
        sent = msgs.copy()
        sent[:, c] = msgs.sum(1)
        recv = sent.copy()
        chains = an.coord_fixed + per_block.reshape(L, N, M).sum(0)  # (N, M)
        if an.order == "sequential":
            last_full = (code.reshape(L, K, N, M)[..., -1] >= self.code_offset + H + 1).transpose(2, 0, 1)
            step = chains.sum(1) + self.tail(last_full, last_b.T, opt, chains)
        else:
            uses = acts * hv  # (N, K)
            per = None if bw is None else (an.wire / bw)[:, None, None]
            holds = list(an.link_hold.values()) if bw is None else [u[None] * per for u in an.link_uses.values()]
            links = np.max([np.einsum("nk,kd->nd" if h.ndim == 2 else "nk,nkd->nd", uses, h).max(1) for h in holds],
                           axis=0) if holds else np.zeros(N)
            step = np.maximum(np.maximum(busy.max(1), links), chains.max(1) + opt.max(1))
        copy_s = an.copy_s if bw is None else 2 * an.remote * (an.wire / bw)[:, None]  # (K,) or (N, K)
        copies = acts * hv * copy_s  # (N, K)
        for cores, mask, copied in an.pools:  # a host's work, its copies included, over its cores
            step = np.maximum(step, (busy @ mask + copies @ copied) / cores)
        return dict(step_time_s=step, busy_s=busy, flop=flop, mem_bytes=mem, sent_bytes=sent, recv_bytes=recv,
                    chains_s=chains, optimizer_s=opt)

    def table(self, scaled: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per device k and code n_f + (H + 1) n_b (row k (H + 1)^2 + code), what ``Analytical.evaluate``
        derives from a device's share of one block. Shares, reduced over devices: per phase and half the
        active leg (task plus the round trip; ``scaled``: with latencies only, the transfers being added per
        plan); per phase the fan-out hold (``scaled``: 1 per message, scaled per plan); the coordinator's
        reductions. Sums, summed per device: busy time, FLOP, bytes moved, and messages per half."""
        cached = self.tables.get(scaled)
        if cached is not None:
            return cached
        an = self.an
        K, H1, hv = len(an.names), an.onehot.shape[1] + 1, an.halves
        n_f, n_b = np.tile(np.arange(H1), H1), np.repeat(np.arange(H1), H1)  # per code
        act = ((n_f > 0) * 1.0, (n_b > 0) * 1.0)
        leg = an.latency if scaled else an.msg + an.msg_back
        hold = an.remote if scaled else an.fan_hold
        shares, sums = np.zeros((K, H1 * H1, 2 * hv + 3)), np.zeros((K, H1 * H1, 4))
        for k in range(K):
            cols = [np.where(act[p] > 0, an.t_task[k, j, p, n] + leg[k], 0.0)
                    for p, n in enumerate((n_f, n_b)) for j in range(hv)]
            cols += [act[p] * hold[k] for p in range(2)]
            cols.append((act[0] + act[1]) * hv * an.reduce_s)
            shares[k] = np.stack(cols, 1)
            both = an.t_task[k].sum(0)  # (phase, n)
            sums[k] = np.stack([both[0, n_f] + both[1, n_b], n_f * an.flop_sub[0] + n_b * an.flop_sub[1],
                                n_f * an.bytes_sub[0] + n_b * an.bytes_sub[1], act[0] + act[1]], 1)
        self.tables[scaled] = tables = shares.reshape(K * H1 * H1, -1), sums.reshape(K * H1 * H1, -1)
        return tables

    def buffers(self, blocks: int, columns: int) -> tuple[np.ndarray, ...]:
        """The work arrays for ``blocks`` (plan, micro-batch) pairs, kept between calls: fresh arrays of this
        size come from the OS each time, and their page faults cost more than the arithmetic."""
        L, H, K = self.an.onehot.shape
        if self.work is None or self.work[0].shape[0] != blocks or self.work[4].shape[-1] != columns:
            self.work = (np.empty((blocks, L, H), np.float32), np.empty((blocks, L, H), np.float32),
                         np.empty((L, K, blocks), np.float32), np.empty((L, K, blocks), np.intp),
                         np.empty((L, K, blocks, columns)), np.empty((L, blocks, columns)),
                         np.empty((L, blocks, columns)), np.empty((L, K, blocks, 4)))
        return self.work

    def optimizer_times(self, trained: np.ndarray) -> np.ndarray:
        """``DeviceSpec.compute_time(0, P x bytes per parameter)`` per device for a (N, K) array of trained
        parameter counts: the optimizer task's overhead plus its memory time (0 where nothing trains)."""
        specs = [s for _, s in self.an.cluster.devices]
        overhead = np.array([s.memory_task_overhead_s for s in specs])
        bw = np.array([s.mem_bandwidth for s in specs])
        nbytes = trained * self.an.opt_per_param
        return np.where(nbytes > 0, overhead + nbytes / bw, 0.0)

    def tail(self, last_full, last_blocks_b, opt, chains) -> np.ndarray:
        """``Analytical._tail`` per plan (N,), from the last micro-batch's FULL devices (N, L, K) and backward
        legs (N, L)."""
        c = self.an.coord
        after = np.concatenate((np.zeros((len(opt), 1)), np.cumsum(last_blocks_b, 1)[:, :-1]), 1)  # (N, L)
        first = np.argmax(last_full, axis=1)  # (N, K): the lowest FULL block of each device
        slack = np.where(last_full.any(1), np.take_along_axis(after, first, 1), chains[:, -1:])
        waits = np.where(opt > 0, opt - slack, -np.inf)
        waits[:, c] = opt[:, c]
        return waits.max(1)
