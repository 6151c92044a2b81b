"""The adaptive policy's decisions and the link monitor's estimates, on figures chosen so the
right answer is known (the agent's own runs are in test_agent_faults.py)."""

from __future__ import annotations

import random

import pytest

from splitwire.edge.link_monitor import FrameTiming, LinkMonitor, Unanswered
from splitwire.edge.policy import CutPolicy, PolicySettings
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.plan_file import PlanOption

# Send a lot, compute little on the edge / send little, compute more / everything on the edge.
BIG = PlanOption("c0001", "fp32", None, 2.0, 5.0, 600_000, 4_000, 0.0)
SMALL = PlanOption("c0030", "int8+zstd1", None, 20.0, 3.0, 20_000, 4_000, 0.002)
LOCAL = PlanOption("c0069", "none", "all-on-edge", 60.0, 0.0, 0, 0, 0.0)
FAST = LinkModel("fast", 1e9, 1e9, 0.001)
SLOW = LinkModel("slow", 20e6, 20e6, 0.020)
DEAD = LinkModel("dead", 1e5, 1e5, 0.300)


def policy(*options: PlanOption, **kwargs) -> CutPolicy:
    settings = PolicySettings(hold_s=kwargs.pop("hold_s", 3.0))
    kwargs.setdefault("objective", "latency")
    kwargs.setdefault("accuracy_budget", 0.01)
    return CutPolicy(options or (BIG, SMALL, LOCAL), settings=settings, **kwargs)


def best(p: CutPolicy, link: LinkModel) -> PlanOption:
    prices = p.prices(link)
    return min(p.options, key=lambda o: p.score(prices[o]))


def test_each_link_has_the_expected_best() -> None:
    p = policy()
    assert best(p, FAST) == BIG  # 12.8 ms against 24 ms and 60 ms
    assert best(p, SLOW) == SMALL  # 20 + 20 + 8 + 1.6 + 3 = 52.6 ms against 268 ms and 60 ms
    assert best(p, DEAD) == LOCAL


def test_switch_only_after_the_hold() -> None:
    p = policy()
    assert p.consider(BIG, DEAD, now_s=0.0) is None
    assert p.consider(BIG, DEAD, now_s=2.9) is None
    switch = p.consider(BIG, DEAD, now_s=3.1)
    assert switch is not None and (switch.old, switch.new) == (BIG, LOCAL)
    assert "measured link" in switch.reason and "ms" in switch.reason


def test_an_interruption_restarts_the_hold() -> None:
    p = policy()
    assert p.consider(BIG, DEAD, now_s=0.0) is None
    assert p.consider(BIG, FAST, now_s=1.0) is None  # the current option is best again
    assert p.consider(BIG, DEAD, now_s=2.0) is None
    assert p.consider(BIG, DEAD, now_s=4.5) is None  # 2.5 s since the candidate came back
    assert p.consider(BIG, DEAD, now_s=5.1) is not None


def test_noise_around_a_crossover_never_flaps() -> None:
    """Two options predicted within the margin of each other, on a link whose estimate wobbles
    by +-20 % at every frame for a minute: no switch."""
    a = PlanOption("c0010", "fp32", None, 5.0, 2.0, 100_000, 1_000, 0.0)
    b = PlanOption("c0020", "fp32", None, 10.0, 2.0, 50_000, 1_000, 0.0)
    p = policy(a, b, hold_s=1.0)
    rng = random.Random(7)
    current, switches = a, 0
    for step in range(600):
        link = LinkModel("noisy", 80e6 * rng.uniform(0.8, 1.2), 80e6, 0.010)
        switch = p.consider(current, link, now_s=step * 0.1)
        if switch is not None:
            current, switches = switch.new, switches + 1
    assert switches == 0


def test_a_real_change_under_noise_switches_once() -> None:
    p = policy(hold_s=1.0)
    rng = random.Random(3)
    current, switches = BIG, []
    for step in range(300):
        base = FAST if step < 100 else DEAD
        link = LinkModel("noisy", base.uplink_bps * rng.uniform(0.8, 1.2),
                         base.downlink_bps, base.rtt_s)  # fmt: skip
        switch = p.consider(current, link, now_s=step * 0.1)
        if switch is not None:
            current = switch.new
            switches.append((step, switch.new))
    assert [new for _, new in switches] == [LOCAL]
    assert 100 < switches[0][0] <= 112  # within the hold (10 steps) of the change


def test_accuracy_budget_and_availability_limit_the_choice() -> None:
    lossy = PlanOption("c0040", "int4+zstd1", None, 1.0, 1.0, 1_000, 1_000, 0.05)
    p = policy(BIG, lossy, hold_s=0.0)
    assert p.consider(BIG, SLOW, now_s=0.0) is None  # lossy is fastest but over the budget
    p = policy(hold_s=0.0)
    served = {BIG.cut, LOCAL.cut}
    for now in (0.0, 1.0):
        switch = p.consider(BIG, DEAD, now_s=now, usable=lambda o: o.cut in served)
    assert switch is not None and switch.new == LOCAL
    p = policy(hold_s=0.0)
    for now in (0.0, 1.0):
        assert p.consider(BIG, DEAD, now_s=now, usable=lambda o: o.cut == BIG.cut) is None


def test_demanded_rate_and_throughput_objective() -> None:
    # On this link the local option has the lowest latency (60 ms against 72 ms), but at 30 fps
    # demanded it cannot keep up (16.7 fps) while SMALL can (50 fps).
    link = LinkModel("mid", 10e6, 10e6, 0.030)
    assert best(policy(), link) == LOCAL
    assert best(policy(demand_fps=30.0), link) == SMALL
    p = policy(objective="throughput")
    assert best(p, FAST) == BIG  # bottleneck 5 ms (cloud) against 20 ms and 60 ms


def test_edge_scale_moves_the_choice() -> None:
    """An edge twice as slow as planned makes the edge-heavy options costlier."""
    p = policy(BIG, LOCAL)
    link = LinkModel("mid", 20e6, 20e6, 0.005)  # BIG: 2 + 5 + 240 + ... ms; LOCAL: 60 ms
    prices = p.prices(link)
    assert min(prices, key=lambda o: prices[o].latency_ms) == LOCAL
    prices = p.prices(link, edge_scale=10.0)
    assert min(prices, key=lambda o: prices[o].latency_ms) == BIG


# ---- the link monitor ---------------------------------------------------------------------


def simulate(
    *, rate_bps: float, rtt_s: float, frames: int, bytes_up: int, every_s: float, window: int,
    cloud_s: float = 0.005, batch_pairs: bool = False,
) -> list[FrameTiming]:  # fmt: skip
    """A FIFO uplink at ``rate_bps``: frames produced every ``every_s``, at most ``window`` in
    flight; the cloud takes ``cloud_s`` (``batch_pairs``: two frames answered together)."""
    timings: list[FrameTiming] = []
    link_free = 0.0
    received: list[float] = []
    for i in range(frames):
        send = i * every_s
        if i >= window:
            send = max(send, received[i - window])
        start = max(send, link_free)
        link_free = start + bytes_up * 8 / rate_bps
        arrival = link_free + rtt_s / 2
        done = arrival + cloud_s
        queue = 0.0
        if batch_pairs and i % 2 == 0:
            # This frame waits for the next one to arrive, and they leave together.
            nxt = max(link_free, send + every_s) + bytes_up * 8 / rate_bps + rtt_s / 2
            queue = max(nxt - arrival, 0.0)
            done += queue
        receive = done + rtt_s / 2
        received.append(receive)
        timings.append(FrameTiming(int(send * 1e9), int(receive * 1e9),
                                   int((cloud_s + queue) * 1e9), bytes_up, 1_000))  # fmt: skip
    return timings


def feed(monitor: LinkMonitor, timings: list[FrameTiming]) -> None:
    for t in timings:
        monitor.observe(t, now_s=t.received_ns / 1e9)


def test_a_busy_uplink_is_measured() -> None:
    monitor = LinkMonitor()
    timings = simulate(rate_bps=10e6, rtt_s=0.020, frames=40, bytes_up=50_000,
                       every_s=0.010, window=4)  # fmt: skip
    feed(monitor, timings)
    link = monitor.link(now_s=timings[-1].received_ns / 1e9)
    assert link is not None
    assert link.uplink_bps == pytest.approx(10e6, rel=0.05)
    assert link.rtt_s == pytest.approx(0.020, abs=0.003)
    # The frames queued behind each other (the window) are not jitter of the link.
    assert link.jitter_s < 0.002


def test_an_idle_uplink_is_never_overestimated() -> None:
    """Frames far apart (the edge is the bottleneck): samples are lower bounds only."""
    monitor = LinkMonitor()
    timings = simulate(rate_bps=10e6, rtt_s=0.020, frames=10, bytes_up=50_000,
                       every_s=0.200, window=4)  # fmt: skip
    feed(monitor, timings)
    assert monitor.uplink_bps is not None
    assert monitor.uplink_bps <= 10e6
    # ... and the round trip it predicts for the frames it saw is the one measured.
    link = monitor.link(now_s=timings[-1].received_ns / 1e9)
    assert link is not None
    predicted = link.transfer_s(50_000, 1_000)
    assert predicted == pytest.approx(timings[-1].network_s, rel=0.05)


def test_results_batched_in_the_tail_do_not_look_like_a_fast_link() -> None:
    monitor = LinkMonitor()
    feed(monitor, simulate(rate_bps=10e6, rtt_s=0.020, frames=40, bytes_up=50_000,
                           every_s=0.010, window=4, batch_pairs=True))  # fmt: skip
    assert monitor.uplink_bps == pytest.approx(10e6, rel=0.10)


def test_a_slower_link_shows_once_old_samples_age_out() -> None:
    monitor = LinkMonitor(window_s=2.0)
    fast = simulate(rate_bps=50e6, rtt_s=0.010, frames=60, bytes_up=50_000,
                    every_s=0.002, window=4)  # fmt: skip
    feed(monitor, fast)
    assert monitor.uplink_bps == pytest.approx(50e6, rel=0.05)
    offset = fast[-1].received_ns + int(1e9)
    slow = simulate(rate_bps=5e6, rtt_s=0.010, frames=60, bytes_up=50_000,
                    every_s=0.002, window=4)  # fmt: skip
    for t in slow:
        monitor.observe(FrameTiming(t.sent_ns + offset, t.received_ns + offset, t.cloud_ns,
                                    t.bytes_up, t.bytes_down),
                        now_s=(t.received_ns + offset) / 1e9)  # fmt: skip
    assert monitor.uplink_bps == pytest.approx(5e6, rel=0.05)


def _shifted(timings: list[FrameTiming], offset: int) -> list[FrameTiming]:
    return [FrameTiming(t.sent_ns + offset, t.received_ns + offset, t.cloud_ns, t.bytes_up,
                        t.bytes_down) for t in timings]  # fmt: skip


@pytest.mark.parametrize("slow_frames", [2, 3])
def test_a_link_that_got_worse_replaces_the_window_after_three_answers(slow_frames: int) -> None:
    """50 Mbit/s 10 ms, then 500 kbit/s 100 ms: after three slow answers in a row the estimate
    is the new link's, not the old window's maximum (two could be a burst of jitter)."""
    monitor = LinkMonitor(window_s=5.0)
    fast = simulate(rate_bps=50e6, rtt_s=0.010, frames=40, bytes_up=10_000,
                    every_s=0.01, window=4)  # fmt: skip
    feed(monitor, fast)
    before = monitor.uplink_bps
    slow = simulate(rate_bps=500e3, rtt_s=0.100, frames=slow_frames, bytes_up=10_000,
                    every_s=0.1, window=4)  # fmt: skip
    feed(monitor, _shifted(slow, fast[-1].received_ns + 10_000_000))
    link = monitor.link(now_s=(fast[-1].received_ns + 10_000_000 + slow[-1].received_ns) / 1e9)
    assert link is not None
    slow_trip = link.transfer_s(10_000, 1_000)
    if slow_frames < 3:
        assert link.uplink_bps == before, link
    else:
        # Each slow sample is a lower bound; the model they give prices a frame that has the
        # link to itself as measured.
        assert link.uplink_bps <= 500e3 * 1.05, link
        assert slow_trip == pytest.approx(slow[0].network_s, rel=0.15)  # + the 1 kB answer


def test_bigger_frames_on_the_same_link_are_not_a_worse_link() -> None:
    monitor = LinkMonitor(window_s=5.0)
    small = simulate(rate_bps=10e6, rtt_s=0.010, frames=20, bytes_up=5_000,
                     every_s=0.1, window=1)  # fmt: skip
    feed(monitor, small)
    before = monitor.uplink_bps
    big = simulate(rate_bps=10e6, rtt_s=0.010, frames=5, bytes_up=200_000,
                   every_s=0.3, window=1)  # fmt: skip
    feed(monitor, _shifted(big, small[-1].received_ns + 10_000_000))
    assert before is not None and monitor.uplink_bps is not None
    assert monitor.uplink_bps >= before
    assert len(monitor._samples) == 25  # nothing forgotten


def test_too_few_samples_give_no_link() -> None:
    monitor = LinkMonitor(min_samples=3)
    for t in simulate(rate_bps=10e6, rtt_s=0.02, frames=2, bytes_up=1000, every_s=0.1, window=1):
        monitor.observe(t, now_s=t.received_ns / 1e9)
    assert monitor.link(now_s=0.5) is None


def test_a_frame_stuck_on_a_link_that_just_slowed_bounds_the_estimate() -> None:
    """50 Mbit/s, then a frame of 50 kB sent and not answered: while its age is what the old
    link explains the estimate stays; once it is overdue the uplink is at most its bits over
    the time it has had (age − base RTT − the cloud's time), so it falls with every moment
    and the policy sees the slower link without waiting for an answer."""
    monitor = LinkMonitor(window_s=5.0)
    timings = simulate(rate_bps=50e6, rtt_s=0.010, frames=40, bytes_up=50_000,
                       every_s=0.002, window=4)  # fmt: skip
    feed(monitor, timings)
    now_s = timings[-1].received_ns / 1e9
    sent_ns = timings[-1].received_ns + 1_000_000
    stuck = Unanswered(sent_ns, 50_000)
    on_time = monitor.link(now_s=now_s, oldest=stuck, now_ns=sent_ns + 15_000_000)
    assert on_time is not None and on_time.uplink_bps == pytest.approx(50e6, rel=0.05)
    late = monitor.link(now_s=now_s, oldest=stuck, now_ns=sent_ns + 410_000_000)
    assert late is not None
    # 400 kbit in 0.41 s − 10 ms RTT − 5 ms cloud ≈ 1.0 Mbit/s at most.
    assert late.uplink_bps == pytest.approx(400_000 / 0.395, rel=0.03)
    later = monitor.link(now_s=now_s, oldest=stuck, now_ns=sent_ns + 2_010_000_000)
    assert later is not None and later.uplink_bps < late.uplink_bps / 4
    assert monitor.uplink_bps == pytest.approx(50e6, rel=0.05)  # the samples are unchanged
