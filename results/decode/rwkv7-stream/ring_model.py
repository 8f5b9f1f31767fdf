"""A toy model of the persistent chain (stream_chain.cu) on one SM, all SMs alike - a model,
not a measurement: what it predicts is to be checked on the GPU (README.md).

Tiles are issued in order into S slots; memory serves one SM's tiles one after another at its
share of the copy rate (4.24 TB/s / 132) and delivers each a fixed latency later; NW warps take
units (whole rows in a slot, or a row over several slots) round-robin, a unit's slots one by
one, each slot busy until its warp is done with it, P20 seconds a 20 KB; a phase starts when
its predecessor's last tile is done, plus SYNC, plus the stand-in before it. The stand-in
phases' own synchronisations are not modelled (about 0.1 ms of the measured stand-ins).

Calibration: P20 and the latency are chosen so that the measured form (10 warps, 10 slots of
20 KB) comes out at its measured 1.38-1.45 ms; the model then also gives its measured
behaviour with stand-ins (nothing hidden).

    python results/decode/rwkv7-stream/ring_model.py
"""
import itertools

BW = 4.24e12 / 132  # bytes/s an SM
SYNC = 1.1e-6       # a phase's cross-block synchronisation (measured: stand-ins alone)
OWN = (32 * 16 + 3) * 1e-3  # the +3/10 us stand-ins' own time a step, ms


def run(nw, slots, slot, latency, p20, norm=0.0, head=0.0, layers=32):
    """Milliseconds a step. norm: us before r/k/v, FFN key and the head; head: after r/k/v."""
    per_sm = lambda rows, k: rows * k * 2 / 132  # noqa: E731
    phases = []  # (bytes an SM, a row's bytes, stand-in before)
    for _ in range(layers):
        phases += [(per_sm(7680, 2560), 5120, norm), (per_sm(2560, 2560), 5120, head),
                   (per_sm(10240, 2560), 5120, norm), (per_sm(2560, 10240), 20480, 0.0)]
    phases.append((per_sm(65536, 2560), 5120, norm))
    tiles = []  # (phase, unit, bytes)
    for p, (size, row, _) in enumerate(phases):
        unit, spu = ((slot // row) * row, 1) if row <= slot else (row, row // slot)
        for u in range(max(1, round(size / unit))):
            tiles += [(p, u, unit / spu)] * spu
    done = [0.0] * len(tiles)
    mem_free, last_issue, warp_free = 0.0, 0.0, [0.0] * nw
    start, end = {0: 0.0}, {}
    for k, (p, u, size) in enumerate(tiles):
        if p not in start:
            start[p] = end[p - 1] + SYNC + phases[p][2]
        issue = max(last_issue, done[k - slots] if k >= slots else 0.0)  # its slot free
        mem_free = max(issue, mem_free) + size / BW
        w = u % nw
        done[k] = max(mem_free + latency, warp_free[w], start[p]) + p20 * size / 20480
        warp_free[w] = done[k]
        end[p] = max(end.get(p, 0.0), done[k])
        last_issue = issue
    return max(done) * 1e3


if __name__ == "__main__":
    print("calibrated to the measured 10 x 10 x 20 KB form; hidden = plain + stand-ins' own time - with")
    for latency, p20 in ((0.8e-6, 2.8e-6), (1.5e-6, 2.4e-6), (1.5e-6, 2.8e-6)):
        line = f"latency {latency * 1e6:.1f} us, {p20 * 1e6:.1f} us a 20 KB tile a warp:"
        for nw, slots, slot in ((10, 10, 20480), (10, 20, 10240), (10, 40, 5120)):
            a = run(nw, slots, slot, latency, p20)
            b = run(nw, slots, slot, latency, p20, 3e-6, 10e-6)
            line += f"\n  {nw} warps {slots} x {slot // 1024} KB: plain {a:.3f}  +3/10 us {b:.3f}  hidden {a + OWN - b:+.3f} of {OWN:.3f}"
        print(line)
    print("what hiding the +3/10 us stand-ins would take (latency 1.5 us, 5 KB slots, 10 warps):")
    for slots, speed in itertools.product((40, 80, 160), (1, 2, 4)):
        a = run(10, slots, 5120, 1.5e-6, 2.4e-6 / speed)
        b = run(10, slots, 5120, 1.5e-6, 2.4e-6 / speed, 3e-6, 10e-6)
        print(f"  ring {slots * 5} KB an SM, consumers x{speed}: plain {a:.3f}  +3/10 us {b:.3f}  hidden {a + OWN - b:+.3f}")
