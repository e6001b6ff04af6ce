"""Compiled (Numba) kernels of the fused device-update engine (:mod:`gpu_model.kernels.fused_synapses`).

The physics is that of :mod:`gpu_model.devices` and :mod:`gpu_model.synapse` (same formulas, same
order of events per synapse), written per synapse and per device instead of per array pass:

* device state: 2-D arrays ``[synapse, device]`` (``device`` 0..N-1 the G+ devices, N..2N-1 the G-
  devices), all views of one packed record per device (``fused_synapses.DEVICE_RECORD``) so that
  one pulsed device's fields share a cache line and the 2N devices of a synapse are adjacent;
* ``dev`` = (g_prog, hist, nu, step_mult, z_nu, t_prog, n_set, n_reset): µS, 1, 1, 1, 1, s, counts;
* ``P``: the preset's numbers (float64, indices ``P_*``); ``M``: model codes and sizes (int64,
  indices ``M_*``); ``keys``: the keyed-RNG keys of this call (uint64, indices ``K_*``,
  :mod:`gpu_model.kernels.keyed_rng`);
* arithmetic in float64 on values stored as float32 (the reference rounds every intermediate to
  float32): results agree with the reference in distribution and to float32 rounding, not bitwise.

Units: conductance µS, time s, weights in weight units (W = beta * sum_k (G+_k - G-_k)).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..presets import JOSHI_NU_MU, JOSHI_NU_SIGMA, JOSHI_PROG, JOSHI_QS
from .keyed_rng import R_MAX, normal_fast_fill, normal_fast_fill2, normal_fast_gather, normal_fast_nb, normal_nb
from .intrinsics import prefetch1, prefetch2, unmanaged

# --- model codes (M[M_DRIFT], M[M_READ], M[M_PROG]) ------------------------------------------------
DRIFT_CODES = {"constant": 0, "joshi": 1}
READ_CODES = {"affine": 0, "joshi_1f": 1, "none": 2}
PROG_CODES = {"jap": 0, "joshi": 1, "none": 2}
DRIFT_CONSTANT, DRIFT_JOSHI = 0, 1
READ_AFFINE, READ_JOSHI_1F, READ_NONE = 0, 1, 2
PROG_JAP, PROG_JOSHI, PROG_NONE = 0, 1, 2

# --- P: preset numbers (float64) -------------------------------------------------------------------
P_G_MIN = 0          # µS, PCMPreset.g_min
P_G_MAX = 1          # µS, PCMPreset.g_max
P_RESET_MEAN = 2     # µS, PCMPreset.reset_mean
P_RESET_STD = 3      # µS, PCMPreset.reset_std
P_DECAY = 4          # exp(-1 / PCMPreset.history_tau_pulses)
P_MU_A = 5           # PCMPreset.set_mu_slope
P_MU_B = 6           # µS, PCMPreset.set_mu_offset
P_MU_C = 7           # µS, PCMPreset.set_mu_hist
P_SG_A = 8           # PCMPreset.set_sigma_slope
P_SG_B = 9           # µS, PCMPreset.set_sigma_offset
P_SG_C = 10          # µS, PCMPreset.set_sigma_hist
P_D2D = 11           # PCMPreset.step_d2d_std
P_T0 = 12            # s, PCMPreset.drift_t0
P_NU_MEAN = 13       # PCMPreset.nu_mean
P_NU_STD = 14        # PCMPreset.nu_std
P_RD_A = 15          # PCMPreset.read_sigma_slope
P_RD_B = 16          # µS, PCMPreset.read_sigma_offset
P_T_READ = 17        # s, PCMPreset.t_read
P_IDEAL_STEP = 18    # µS per pulse, PCMPreset.ideal_step
P_BETA = 19          # weight units per µS (DifferentialSynapses.beta)
P_CAP = 20           # µS, refresh cap = refresh_threshold * g_max
P_CM = 21            # µS, common-mode level (0: off)
P_INV_T0 = 22        # 1/s, 1 / PCMPreset.drift_t0
P_ZERR = 23          # bound on |fast normal - keyed normal| the certification assumes (keyed_rng.NORMAL_FAST_ERR)
P_ZPERT = 24         # tests only: a perturbation of the fast normals (0 in use; see znorm)
N_P = 25

# --- M: codes and sizes (int64) --------------------------------------------------------------------
M_DRIFT = 0          # DRIFT_* code
M_READ = 1           # READ_* code
M_PROG = 2           # PROG_* code
M_IDEAL = 3          # 1: ideal linear device (PCMPreset.ideal)
M_DRIFT_FREE = 4     # 1: no device ever drifts (ideal, or constant model with nu = 0)
M_N = 5              # devices per side N
M_MAX_PULSES = 6     # PCMPreset.prog_verify_max_pulses
M_D2D = 7            # 1: apply the d2d step multiplier (step_d2d_std > 0)
M_EXACT = 8          # 1: every normal by keyed_rng.normal_nb (no fast normals: the path before certification)
N_M = 9

# --- keys of one call (uint64) ---------------------------------------------------------------------
K_SET = 0            # KIND_SET_STEP
K_VB = 1             # KIND_VERIFY_BEFORE
K_VA = 2             # KIND_VERIFY_AFTER
K_VR = 3             # KIND_VERIFY_REFRESHED
K_REF_READ = 4       # KIND_REFRESH_READ (or KIND_READ_WEIGHTS for read_weights)
K_RESET = 5          # KIND_RESET (KIND_INIT_RESET in program())
K_ATT = 6            # KIND_PROG_ATTEMPT (KIND_INIT_ATTEMPT)
K_VER = 7            # KIND_PROG_VERIFY (KIND_INIT_VERIFY)
N_K = 8

# Joshi 2020 constants (gpu_model.presets; Methods of Joshi et al., Nat. Commun. 11, 2473)
NU_MU_A, NU_MU_B, NU_MU_LO, NU_MU_HI = JOSHI_NU_MU
NU_SD_A, NU_SD_B, NU_SD_LO, NU_SD_HI = JOSHI_NU_SIGMA
QS_C, QS_E, QS_MAX = JOSHI_QS
PROG_C2, PROG_C1, PROG_C0 = JOSHI_PROG
G_NORM_FLOOR = 1e-6  # floor of G/g_max before its log / power (as gpu_model/devices.py)

# --- certified fast normals ------------------------------------------------------------------------
# Every random number of an update is a keyed normal z = sqrt(-2 ln u1) cos(2 pi u2) (keyed_rng), and
# libm's cos of a random argument is most of its cost. The kernels draw z' = keyed_rng.normal_fast_nb
# (the same u1, log and sqrt; cos by a branch-free polynomial), |z' - z| <= P[P_ZERR], carry a bound on
# the error of every quantity computed from z', and keep a result only when the bound proves it equal
# to the exact path's: a float32 that the whole interval [x - e, x + e] rounds to, or a verify decision
# |v - target| <= tol that holds (or fails) over it. Otherwise that site is recomputed with normal_nb.
# Outcomes are therefore bit-identical to the exact path (M_EXACT = 1), whatever the bound's slack
# (tests/test_fused_engine.py: a perturbed fast normal with a matching bound gives the same bits).
# Rounding: an operation's float64 result differs from the real one by <= 2^-53 of its magnitude,
# so two paths evaluating the same expression on different inputs differ by the inputs' difference
# propagated, plus <= 2 * 2^-53 * (magnitude) per operation.
ROUND_SLACK = 2.0 ** -50   # per operation and unit magnitude: 2 paths x 2^-53, x4 margin (engineering choice)
ITEM_BLOCK = 64            # apply_serial: pulse-list items whose draws are made in one vectorised pass
                           # (engineering choice: the draws of 64 items fit L1 beside their records)
ATT_BITS = 2               # program-and-verify: the first 2^2 = 4 attempts of every device of a write drawn
                           # in one vectorised pass (engineering choice: a JAP attempt passes with
                           # probability ~0.22, ~4.5 attempts a device; later attempts drawn one by one)


@njit(cache=True, inline="always")
def znorm(key, s, d, j, P, M):
    """The fast keyed normal z' of (key, s, d, j): |z' - normal_nb(...)| <= P[P_ZERR] (exact under M_EXACT).
    P[P_ZPERT] != 0 (tests): z' += P_ZPERT sin(1000 z'), a deterministic error the bound must cover."""
    if M[M_EXACT]:
        return normal_nb(key, s, d, j)
    z = normal_fast_nb(key, s, d, j)
    pert = P[P_ZPERT]
    if pert != 0.0:
        z += pert * math.sin(1000.0 * z)
    return z


@njit(cache=True, inline="always")
def zfill(key, s, d0, dd, j0, dj, n, out, P, M):
    """out[i] = znorm(key, s, d0 + i dd, j0 + i dj) for i < n, the fast normals in one vectorised
    pass (keyed_rng.normal_fast_fill; the same values and perturbation as znorm)."""
    if M[M_EXACT]:
        for i in range(n):
            out[i] = normal_nb(key, s, d0 + i * dd, j0 + i * dj)
        return
    normal_fast_fill(key, s, d0, dd, j0, dj, n, out)
    pert = P[P_ZPERT]
    if pert != 0.0:
        for i in range(n):
            out[i] += pert * math.sin(1000.0 * out[i])


@njit(cache=True, inline="always")
def zfill2(key, s, d0, n_dev, out, P, M):
    """out[k 2^ATT_BITS + a] = znorm(key, s, d0 + k, a) for k < n_dev, a < 2^ATT_BITS (one vectorised
    pass: keyed_rng.normal_fast_fill2)."""
    n = n_dev << ATT_BITS
    if M[M_EXACT]:
        for i in range(n):
            out[i] = normal_nb(key, s, d0 + (i >> ATT_BITS), i & ((1 << ATT_BITS) - 1))
        return
    normal_fast_fill2(key, s, d0, ATT_BITS, n, out)
    pert = P[P_ZPERT]
    if pert != 0.0:
        for i in range(n):
            out[i] += pert * math.sin(1000.0 * out[i])


@njit(cache=True, inline="always")
def f32_sure(x, e):
    """True when every value within e (+ the rounding of x +- e) of x rounds to the float32 of x."""
    e = e + ROUND_SLACK * abs(x)
    return np.float32(x - e) == np.float32(x + e)


@njit(cache=True, inline="always")
def unmanaged_dev(dev):
    """The device-field tuple as unmanaged views (intrinsics.unmanaged: no reference counting)."""
    return (unmanaged(dev[0]), unmanaged(dev[1]), unmanaged(dev[2]), unmanaged(dev[3]), unmanaged(dev[4]),
            unmanaged(dev[5]), unmanaged(dev[6]), unmanaged(dev[7]))


# --- one device ------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def drifted(g_p, tp, nu, t, P, M):
    """G(t) = G_p ((t - t_p)/t0)^(-nu) for t - t_p > t0, else G_p (µS).

    The drift factor in float32 as the reference (PCMArray.drift_factor): only the subtraction of
    times in float64."""
    if M[M_DRIFT_FREE]:
        return g_p
    r = np.float32(t - tp) * np.float32(P[P_INV_T0])
    if r <= np.float32(1.0):
        return g_p
    return g_p * np.float64(math.exp(-np.float32(nu) * math.log(r)))


@njit(cache=True, inline="always")
def read_sigma(g_now, g_p, tp, t, P, M):
    """Std (µS) of one read of a device at drifted conductance ``g_now`` (programmed ``g_p`` at ``tp``)."""
    m = M[M_READ]
    if m == READ_NONE:
        return 0.0
    if m == READ_AFFINE:
        return P[P_RD_A] * g_now + P[P_RD_B]                      # sigma = a G + b
    # Joshi 2020 1/f: sigma = G(t) Q_s(G_p/g_max) sqrt(ln((dt + t_read)/(2 t_read))), dt >= t_read
    tr = P[P_T_READ]
    dt = max(t - tp, tr)
    gn = max(g_p / P[P_G_MAX], G_NORM_FLOOR)
    qs = min(QS_C / gn ** QS_E, QS_MAX)                           # Q_s = min(c / g^e, q_max)
    return g_now * qs * math.sqrt(math.log((dt + tr) / (2.0 * tr)))


@njit(cache=True, inline="always")
def drift_exponent(g_p, z, P, M):
    """nu of a device with drift-distribution place ``z`` programmed to ``g_p`` µS (>= 0)."""
    if M[M_DRIFT] == DRIFT_CONSTANT:
        return max(P[P_NU_MEAN] + P[P_NU_STD] * z, 0.0)           # nu ~ N(nu_mean, nu_std)
    lg = math.log(max(g_p / P[P_G_MAX], G_NORM_FLOOR))
    mu = min(max(NU_MU_A * lg + NU_MU_B, NU_MU_LO), NU_MU_HI)     # mu_nu = clip(a ln g + b)
    sd = min(max(NU_SD_A * lg + NU_SD_B, NU_SD_LO), NU_SD_HI)     # sigma_nu = clip(a ln g + b)
    return max(mu + sd * z, 0.0)                                   # nu ~ N(mu_nu, sigma_nu)


@njit(cache=True, inline="always")
def search_left(a, x):
    """np.searchsorted(a, x) (side "left": the first k with a[k] >= x) of an ascending array, by
    halving steps that compile to conditional moves (np.searchsorted's branches mispredict)."""
    n = a.shape[0]
    k = 0                                   # invariant: a[k - 1] < x (or k = 0)
    step = 1
    while step * 2 <= n:
        step *= 2
    while step > 0:
        j = k + step
        k = j if j <= n and a[j - 1] < x else k
        step //= 2
    return k


@njit(cache=True, inline="always")
def clip_g(g, P):
    return min(max(g, P[P_G_MIN]), P[P_G_MAX])


@njit(cache=True, inline="always")
def reset_device(s, d, t, key, z, dev, P, M):
    """RESET device d of synapse s at t: G ~ N(reset_mean, reset_std) clipped, P = 1, n_reset += 1
    (``z``: the fast normal znorm(key, s, d, 0), certified here)."""
    G, H, NU, MU, Z, TP, NS, NR = dev
    sd = P[P_RESET_STD]
    ze = P[P_ZERR]                                          # z: znorm(key, s, d, 0), drawn by the caller
    g = clip_g(P[P_RESET_MEAN] + sd * z, P)
    e = sd * ze + ROUND_SLACK * 3.0 * (abs(P[P_RESET_MEAN]) + sd * (R_MAX + ze))
    if not f32_sure(g, e):                                  # certified, else the exact draw
        g = clip_g(P[P_RESET_MEAN] + sd * normal_nb(key, s, d, 0), P)
    G[s, d] = g
    TP[s, d] = t
    H[s, d] = 1.0
    NR[s, d] += 1
    if M[M_DRIFT] == DRIFT_JOSHI:
        NU[s, d] = drift_exponent(np.float64(G[s, d]), np.float64(Z[s, d]), P, M)


@njit(cache=True, inline="always")
def program_device(s, d, target, tol, t, ka, kv, dev, P, M, traj_g, traj_p, zab, zvb, slot):
    """Program device d of synapse s to ``target`` µS by program-and-verify at t (PCMArray.program_verify).

    ``jap``: attempts G = clip(target + sd z), sd = max(sg_a target + sg_b, 0), each followed by a
    verify read G + (rd_a G + rd_b) z'; done when |read - target| <= tol, at most
    prog_verify_max_pulses attempts (the last one stays). ``joshi``: one attempt with
    sd = max(c2 g^2 + c1 g + c0, 0), g = target/g_max. ``none``: exact. The history term is P_k of
    the mean SET trajectory, k = first pulse whose mean G reaches the target (0 for ideal/none).
    Returns (programming pulses, verify reads). ``zab``, ``zvb``: the first 2^ATT_BITS attempt and
    verify normals of this device from index ``slot`` 2^ATT_BITS on (zfill2), ``slot`` < 0: none.
    """
    G, H, NU, MU, Z, TP, NS, NR = dev
    target = clip_g(target, P)
    prog = M[M_PROG]
    pulses = 0
    reads = 0
    if prog == PROG_NONE:
        g = target
        if M[M_IDEAL]:
            # n = ceil((G - g_min)/step), in float32 as the reference (a target on a multiple of
            # the step would otherwise count one pulse more or less by rounding)
            x = (np.float32(target) - np.float32(P[P_G_MIN])) / np.float32(P[P_IDEAL_STEP])
            pulses = int(math.ceil(x))
        else:
            pulses = 1
    elif prog == PROG_JOSHI:
        gn = target / P[P_G_MAX]
        sd = max(PROG_C2 * gn * gn + PROG_C1 * gn + PROG_C0, 0.0)   # sigma_prog(g), µS
        ze = P[P_ZERR]
        g = clip_g(target + sd * znorm(ka, s, d, 0, P, M), P)
        e = sd * ze + ROUND_SLACK * 3.0 * (abs(target) + sd * (R_MAX + ze))
        if not f32_sure(g, e):
            g = clip_g(target + sd * normal_nb(ka, s, d, 0), P)
        pulses = 1
        reads = 1
    else:
        sd = max(P[P_SG_A] * target + P[P_SG_B], 0.0)                # sigma(G = target, P = 0)
        g = target
        ze = P[P_ZERR]
        ra, rb = P[P_RD_A], P[P_RD_B]
        e_att = sd * ze + ROUND_SLACK * 3.0 * (abs(target) + sd * (R_MAX + ze))   # bound on |g' - g|
        # bound on |v' - v| for every attempt (G in [0, g_max], |ra G + rb| <= |ra| g_max + |rb|):
        # v' - v = (g' - g)(1 + ra z_v) + sr' (z_v' - z_v), plus 6 operations' rounding
        sr_max = abs(ra) * P[P_G_MAX] + abs(rb)
        e_v = (e_att * (1.0 + abs(ra) * R_MAX) + sr_max * ze
               + ROUND_SLACK * 6.0 * (P[P_G_MAX] + sr_max * (R_MAX + ze) + abs(target) + e_att))
        lo, hi = tol - e_v, tol + e_v            # |v' - target| <= lo: accepted; > hi: rejected; else exact
        a = 0
        e_g = 0.0
        for a in range(M[M_MAX_PULSES]):
            # certified attempt: g' and v' from fast normals; the decision |v - target| <= tol kept
            # when it holds over the bound, else this attempt again with the exact normals
            if slot >= 0 and a < (1 << ATT_BITS):
                za = zab[(slot << ATT_BITS) + a]
                zv = zvb[(slot << ATT_BITS) + a]
            else:
                za = znorm(ka, s, d, a, P, M)
                zv = znorm(kv, s, d, a, P, M)
            g = clip_g(target + sd * za, P)                            # attempt: target + N(0, sd)
            v = g + (ra * g + rb) * zv                                 # verify read
            dv = abs(v - target)
            e_g = e_att
            if dv <= lo:
                ok = True
            elif dv > hi:
                ok = False
            else:
                g = clip_g(target + sd * normal_nb(ka, s, d, a), P)
                v = g + (ra * g + rb) * normal_nb(kv, s, d, a)
                ok = abs(v - target) <= tol
                e_g = 0.0
            pulses += 1
            reads += 1
            if ok:
                break
        if e_g > 0.0 and not f32_sure(g, e_g):                        # the attempt that stays
            g = clip_g(target + sd * normal_nb(ka, s, d, a), P)
    G[s, d] = g
    TP[s, d] = t
    if M[M_IDEAL] or prog == PROG_NONE:
        H[s, d] = 0.0
    else:
        k = min(search_left(traj_g, np.float32(target)), traj_g.shape[0] - 1)
        H[s, d] = traj_p[k]
    if M[M_DRIFT] == DRIFT_JOSHI:
        NU[s, d] = drift_exponent(np.float64(G[s, d]), np.float64(Z[s, d]), P, M)
    return pulses, reads


@njit(cache=True)
def write_synapse(s, w, tol, t, ka, kv, dev, P, M, traj_g, traj_p):
    """Write weight ``w`` (weight units) to synapse s, whose 2N devices were just RESET
    (DifferentialSynapses._write / _write_common_mode). Returns (pulses, reads, capped)."""
    G = dev[0]
    n = M[M_N]
    beta, cap, c = P[P_BETA], P[P_CAP], P[P_CM]
    pulses = 0
    reads = 0
    capped = False
    nb = 2 * n if c > 0 else n                  # devices this write programs
    slot0 = 0 if c > 0 or w > 0 else n          # the first of them (their slots count from it)
    if M[M_PROG] == PROG_JAP and (c > 0 or w != 0.0):
        zab = np.empty(nb << ATT_BITS)
        zvb = np.empty(nb << ATT_BITS)
        zfill2(ka, s, slot0, nb, zab, P, M)
        zfill2(kv, s, slot0, nb, zvb, P, M)
        use = 0
    else:
        zab = np.empty(0)
        zvb = zab
        use = -1 << 40                          # slot < 0: every normal drawn on its own
    if c > 0:
        # common mode: G+_k = c + max(w, 0)/(beta N), G-_k = c + max(-w, 0)/(beta N)
        wpos = max(w, 0.0) / (beta * n)
        wneg = max(-w, 0.0) / (beta * n)
        capped = c + max(wpos, wneg) > cap
        for k in range(n):
            p, r = program_device(s, k, min(c + wpos, cap), tol, t, ka, kv, dev, P, M, traj_g, traj_p,
                                  zab, zvb, use + k)
            pulses += p
            reads += r
        for k in range(n):
            p, r = program_device(s, n + k, min(c + wneg, cap), tol, t, ka, kv, dev, P, M, traj_g, traj_p,
                                  zab, zvb, use + n + k)
            pulses += p
            reads += r
        return pulses, reads, capped
    if w == 0.0:
        return 0, 0, False
    share = abs(w) / (beta * n)                  # |w| spread equally over the N devices of its sign
    side, other = (0, n) if w > 0 else (n, 0)
    for k in range(n):
        g_want = share + np.float64(G[s, other + k])   # + the RESET partner: beta (G+ - G-) lands on w
        if g_want > cap:
            capped = True
        p, r = program_device(s, side + k, min(g_want, cap), tol, t, ka, kv, dev, P, M, traj_g, traj_p,
                              zab, zvb, use + k)
        pulses += p
        reads += r
    return pulses, reads, capped


@njit(cache=True, inline="always")
def resum_synapse(s, t, dev, P, M, cw, cv):
    """Cache entries of synapse s at t: W = beta sum_k (G+_k - G-_k), Var = beta^2 sum_d sigma_d^2."""
    G, H, NU, MU, Z, TP, NS, NR = dev
    n = M[M_N]
    beta = P[P_BETA]
    w = 0.0
    v = 0.0
    for d in range(2 * n):
        gp = np.float64(G[s, d])
        tp = TP[s, d]
        g = drifted(gp, tp, np.float64(NU[s, d]), t, P, M)
        sg = read_sigma(g, gp, tp, t, P, M)
        w += g if d < n else -g
        v += sg * sg
    cw[s] = beta * w
    cv[s] = beta * beta * v


@njit(cache=True)
def refresh_synapse(s, t, tol, keys, dev, P, M, traj_g, traj_p, cw, cv):
    """Refresh synapse s: read W (one noisy read per device), RESET all 2N devices, re-program W.
    Returns (W read, programming pulses, verify reads, capped)."""
    G, H, NU, MU, Z, TP, NS, NR = dev
    n = M[M_N]
    kr = keys[K_REF_READ]
    ze = P[P_ZERR]
    zs = np.empty(4 * n)                     # fast normals: reads (0..2N), RESETs (2N..4N)
    zfill(kr, s, 0, 1, 0, 0, 2 * n, zs, P, M)
    zfill(keys[K_RESET], s, 0, 1, 0, 0, 2 * n, zs[2 * n:], P, M)
    w = 0.0
    e = 0.0                                  # sum of sigma_d: |w' - w| <= ze e + rounding
    mag = 0.0                                # sum of |G_d(t)| + sigma_d |z|: the rounding's scale
    for d in range(2 * n):
        gp = np.float64(G[s, d])
        tp = TP[s, d]
        g = drifted(gp, tp, np.float64(NU[s, d]), t, P, M)
        sg = read_sigma(g, gp, tp, t, P, M)
        r = g + sg * zs[d]                                         # read = G(t) + sigma z
        w += r if d < n else -r
        e += sg
        mag += abs(g) + sg * (R_MAX + ze)
    bw = P[P_BETA] * w
    e_bw = P[P_BETA] * (ze * e + ROUND_SLACK * (6.0 * n + 4.0) * mag)
    if not f32_sure(bw, e_bw):                                     # not certified: the exact reads
        w = 0.0
        for d in range(2 * n):
            gp = np.float64(G[s, d])
            tp = TP[s, d]
            g = drifted(gp, tp, np.float64(NU[s, d]), t, P, M)
            r = g + read_sigma(g, gp, tp, t, P, M) * normal_nb(kr, s, d, 0)
            w += r if d < n else -r
        bw = P[P_BETA] * w
    w_read = np.float64(np.float32(bw))
    for d in range(2 * n):
        reset_device(s, d, t, keys[K_RESET], zs[2 * n + d], dev, P, M)
    pulses, reads, capped = write_synapse(s, w_read, tol, t, keys[K_ATT], keys[K_VER], dev, P, M,
                                          traj_g, traj_p)
    resum_synapse(s, t, dev, P, M, cw, cv)
    return w_read, pulses, reads, capped


# --- one pulsed synapse of an update ---------------------------------------------------------------
@njit(cache=True, inline="always")
def set_chain(g, h, mult, npulse, ks, s, d, exact, P, M, zbuf, zoff):
    """npulse SET pulses on device d of synapse s from (g, h) (JAP 2018):
    h <- h e^{-1/tau}; mu = a_mu g + b_mu + c_mu h; sigma = max(a_s g + b_s + c_s h, 0);
    g <- clip(g + (mu + sigma z_j) mult), z_j the keyed normal (ks, s, d, j).
    ``exact``: z_j by normal_nb, else zbuf[zoff + j] (zoff >= 0: drawn before, apply_serial) or znorm. Returns (g, h, e), e a bound on |g - g of the exact path|:
    per pulse e <- e (1 + A) + K with A = |mult| (|a_mu| + |a_s| R_MAX) (mu and sigma z are Lipschitz in
    g), K = |mult| sigma_max ze + rounding (sigma_max, mu_max over g in [0, g_max], h in [0, h])."""
    a_mu, b_mu, c_mu = P[P_MU_A], P[P_MU_B], P[P_MU_C]
    a_sg, b_sg, c_sg = P[P_SG_A], P[P_SG_B], P[P_SG_C]
    ze = 0.0 if exact else P[P_ZERR]
    am = abs(mult)
    gmax = P[P_G_MAX]
    mu_max = abs(a_mu) * gmax + abs(b_mu) + abs(c_mu) * abs(h)
    sg_max = abs(a_sg) * gmax + abs(b_sg) + abs(c_sg) * abs(h)
    A = am * (abs(a_mu) + abs(a_sg) * R_MAX)
    K = am * sg_max * ze + ROUND_SLACK * 16.0 * (gmax + 2.0 * am * (mu_max + sg_max * (R_MAX + ze)))
    e = 0.0
    for j in range(npulse):
        h *= P[P_DECAY]                                       # P <- P e^{-1/tau}
        mu = a_mu * g + b_mu + c_mu * h                       # mu = a G + b + c P
        sg = max(a_sg * g + b_sg + c_sg * h, 0.0)             # sigma = max(a G + b + c P, 0)
        if exact:
            z = normal_nb(ks, s, d, j)
        elif zoff >= 0:
            z = zbuf[zoff + j]
        else:
            z = znorm(ks, s, d, j, P, M)
        dg = (mu + sg * z) * mult                             # dG ~ N(mu, sigma) x d2d multiplier
        g = clip_g(g + dg, P)
        e = e * (1.0 + A) + K
    return g, h, e


@njit(cache=True, inline="always")
def verify_delta(sign, beta, g0, sg0, zb, g, sg1, za):
    """Measured change of a verified update: sign beta ((g + sg1 za) - (g0 + sg0 zb)) (a G- pulse lowers W)."""
    read_before = g0 + sg0 * zb
    read_after = g + sg1 * za
    return sign * beta * (read_after - read_before)


@njit(cache=True, inline="always")
def verify_refreshed(meas, vnoise, w_c, sd_w, zr, w_read):
    """meas + (W read after the refresh - W read by it): one read of the synapse, W + sqrt(Var) z."""
    w_new = w_c
    if vnoise:
        w_new += sd_w * zr
    return meas + (w_new - w_read)


@njit(cache=True, inline="always")
def update_one(i, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
               out_ref, out_pulses, out_reads, out_meas, out_capped, zbuf, zoff):
    """The whole update of pulse-list item i (DifferentialSynapses.apply_pulse_list, one synapse):
    arbiter, SET pulses, state, cache, verify reads, refresh check and refresh. ``zoff`` >= 0: the
    item's fast normals are zbuf[zoff:] (item_draws' order), else each is drawn here."""
    G, H, NU, MU, Z, TP, NS, NR = dev
    n_dev = M[M_N]
    beta = P[P_BETA]
    s = idx[i]
    c = counts[i]
    k = 0
    if n_dev > 1:                                  # round robin: pick device k, then advance
        k = arb[s]
        arb[s] = k + 1 if k + 1 < n_dev else 0     # (k + 1) mod N without an integer division
    npulse = c if c > 0 else -c
    d = k if c > 0 else n_dev + k                  # positive count: G+ (W up); negative: G- (W down)
    sign = 1.0 if c > 0 else -1.0
    gp0 = np.float64(G[s, d])
    tp0 = TP[s, d]
    g0 = drifted(gp0, tp0, np.float64(NU[s, d]), t, P, M)   # pulses act on the drifted G at t
    sg0 = read_sigma(g0, gp0, tp0, t, P, M)
    ze = P[P_ZERR]
    zb = 0.0
    za = 0.0
    zset = zoff
    if verify and vnoise:
        if zoff >= 0:
            zb, za = zbuf[zoff], zbuf[zoff + 1]
            zset = zoff + 2
        else:
            zb = znorm(keys[K_VB], s, d, 0, P, M)                # read before: g0 + sg0 zb
            za = znorm(keys[K_VA], s, d, 0, P, M)                # read after: g + sg1 za
    if M[M_IDEAL]:
        g = clip_g(g0 + npulse * P[P_IDEAL_STEP], P)            # ideal: G += n step exactly
    else:
        h0 = np.float64(H[s, d])
        mult = np.float64(MU[s, d]) if M[M_D2D] else 1.0
        ks = keys[K_SET]
        g, h, e = set_chain(g0, h0, mult, npulse, ks, s, d, False, P, M, zbuf, zset)
        if not f32_sure(g, e):                                    # not certified: the exact pulses
            g, h, e = set_chain(g0, h0, mult, npulse, ks, s, d, True, P, M, zbuf, zset)
        H[s, d] = h
    G[s, d] = g
    g = np.float64(G[s, d])                                       # the stored (float32) value
    TP[s, d] = t
    NS[s, d] += npulse
    if M[M_DRIFT] == DRIFT_JOSHI:
        NU[s, d] = drift_exponent(g, np.float64(Z[s, d]), P, M)
    sg1 = read_sigma(g, g, t, t, P, M)           # just programmed: G(t) = G_p
    if n_dev > 1:
        # W += sign beta (G_new - G_old), Var += beta^2 (s_new^2 - s_old^2) (>= 0); other devices cached
        cw[s] = cw[s] + sign * beta * (g - g0)
        cv[s] = max(cv[s] + beta * beta * (sg1 * sg1 - sg0 * sg0), 0.0)
    else:
        resum_synapse(s, t, dev, P, M, cw, cv)
    meas = 0.0
    e_m = 0.0                                    # bound on |meas' - meas| (verify reads' fast normals)
    if verify:
        meas = verify_delta(sign, beta, g0, sg0, zb, g, sg1, za)
        e_m = beta * ((sg0 + sg1) * ze + ROUND_SLACK * 8.0 * (abs(g0) + abs(g) + (sg0 + sg1) * (R_MAX + ze)))
    out_ref[i] = 0
    out_pulses[i] = 0
    out_reads[i] = 0
    out_capped[i] = False
    if g >= P[P_CAP]:                                             # pulsed device passed the threshold
        w_read, pulses, reads, capped = refresh_synapse(s, t, tol, keys, dev, P, M, traj_g, traj_p, cw, cv)
        out_ref[i] = 1
        out_pulses[i] = pulses
        out_reads[i] = reads
        out_capped[i] = capped
        if verify:
            w_c = np.float64(cw[s])
            sd_w = math.sqrt(np.float64(cv[s]))
            zr = znorm(keys[K_VR], s, 0, 0, P, M) if vnoise else 0.0
            meas = verify_refreshed(meas, vnoise, w_c, sd_w, zr, w_read)
            e_m += sd_w * ze + ROUND_SLACK * 4.0 * (abs(w_c) + sd_w * (R_MAX + ze) + abs(w_read) + abs(meas) + e_m)
            if vnoise and not f32_sure(meas, e_m):                # not certified: the exact reads
                m0 = verify_delta(sign, beta, g0, sg0, normal_nb(keys[K_VB], s, d, 0), g, sg1,
                                  normal_nb(keys[K_VA], s, d, 0))
                meas = verify_refreshed(m0, vnoise, w_c, sd_w, normal_nb(keys[K_VR], s, 0, 0), w_read)
            out_meas[i] = meas
            return
    if verify and vnoise and not f32_sure(meas, e_m):             # not certified: the exact reads
        meas = verify_delta(sign, beta, g0, sg0, normal_nb(keys[K_VB], s, d, 0), g, sg1,
                            normal_nb(keys[K_VA], s, d, 0))
    out_meas[i] = meas


@njit(cache=True)
def update_one_call(i, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
                    out_ref, out_pulses, out_reads, out_meas, out_capped):
    """:func:`update_one` as an ordinary call, for the parallel loop: a body inlined at Numba-IR
    level into a prange loop made Numba share a temporary of the Joshi drift branch between
    threads (results then depended on the thread count; tests/test_fused_engine.py)."""
    update_one(i, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
               out_ref, out_pulses, out_reads, out_meas, out_capped, cw, -1)


@njit(cache=True, inline="always")
def item_draws(i0, i1, idx, counts, verify, vnoise, keys, arb, M, zk, zs, zd, zj, zoff):
    """The keys of the fast normals of items i0..i1-1, in update_one's order (verified with read
    noise: the reads before and after, then the SET pulses j = 0..n-1), into (zk, zs, zd, zj);
    zoff[i - i0]: the item's first. Returns their number (the caller sized the arrays)."""
    n_dev = M[M_N]
    m = 0
    ks = keys[K_SET]
    for i in range(i0, i1):
        s = idx[i]
        c = counts[i]
        k = arb[s] if n_dev > 1 else 0            # the arbiter's pick (update_one advances it)
        d = k if c > 0 else n_dev + k
        zoff[i - i0] = m
        if verify and vnoise:
            zk[m], zs[m], zd[m], zj[m] = keys[K_VB], s, d, 0
            zk[m + 1], zs[m + 1], zd[m + 1], zj[m + 1] = keys[K_VA], s, d, 0
            m += 2
        if not M[M_IDEAL]:
            for j in range(c if c > 0 else -c):
                zk[m], zs[m], zd[m], zj[m] = ks, s, d, j
                m += 1
    return m


@njit(cache=True, inline="always")
def prefetch_item(i, lookahead, idx, counts, dev, arb, M, cw, cv):
    """Prefetch what item i + lookahead will touch: its cache entries and arbiter (N > 1), and the
    record of its pulsed device (N > 1: the arbiter's pick, prefetched one lookahead earlier, is
    read here) or its pair (N = 1)."""
    n = idx.shape[0]
    j = i + lookahead
    if j < n:
        s = idx[j]
        prefetch1(cw, s)
        prefetch1(cv, s)
        n_dev = M[M_N]
        if n_dev == 1:
            prefetch2(dev[0], s, 0)
            prefetch2(dev[0], s, 1)
        else:
            k = arb[s]
            prefetch2(dev[0], s, k if counts[j] > 0 else n_dev + k)
    j2 = j + lookahead
    if M[M_N] > 1 and j2 < n:
        prefetch1(arb, idx[j2])


@njit(cache=True)
def apply_serial(idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv, lookahead):
    """:func:`update_one` over the pulse list, one thread. Returns the per-item outputs
    (refreshed, refresh programming pulses, refresh verify reads, measured change, capped)."""
    n = idx.shape[0]
    out_ref, out_pulses, out_reads = np.empty(n, np.int8), np.empty(n, np.int64), np.empty(n, np.int64)
    out_meas, out_capped = np.empty(n, np.float32), np.empty(n, np.bool_)
    u_ref, u_pulses, u_reads, u_meas, u_capped = (unmanaged(out_ref), unmanaged(out_pulses), unmanaged(out_reads),
                                                  unmanaged(out_meas), unmanaged(out_capped))
    idx, counts, keys, arb, P, M = unmanaged(idx), unmanaged(counts), unmanaged(keys), unmanaged(arb), unmanaged(P), unmanaged(M)
    traj_g, traj_p, cw, cv = unmanaged(traj_g), unmanaged(traj_p), unmanaged(cw), unmanaged(cv)
    dev = unmanaged_dev(dev)
    zoff = np.empty(ITEM_BLOCK, np.int64)
    bufs = (np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
            np.empty(0, np.float64))
    for i0 in range(0, n, ITEM_BLOCK):
        bufs = run_block(i0, min(i0 + ITEM_BLOCK, n), idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M,
                         traj_g, traj_p, cw, cv, lookahead, u_ref, u_pulses, u_reads, u_meas, u_capped, bufs, zoff)
    return out_ref, out_pulses, out_reads, out_meas, out_capped


@njit(cache=True, inline="always")
def run_block(i0, i1, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
              lookahead, out_ref, out_pulses, out_reads, out_meas, out_capped, bufs, zoff):
    """Items i0..i1-1 (<= ITEM_BLOCK): the keys of all their fast normals (item_draws), the normals
    in one vectorised pass (keyed_rng.normal_fast_gather), then update_one on each. ``bufs``: the
    draw buffers (zk, zs, zd, zj, zv), returned grown when they were too small."""
    zk, zs, zd, zj, zv = bufs
    per = 2 if verify and vnoise else 0
    need = 0
    for i in range(i0, i1):
        c = counts[i]
        need += per + (c if c > 0 else -c)
    if need > zv.shape[0]:
        cap = 2 * need
        zk, zs, zd, zj, zv = (np.empty(cap, np.uint64), np.empty(cap, np.int64), np.empty(cap, np.int64),
                              np.empty(cap, np.int64), np.empty(cap, np.float64))
    m = item_draws(i0, i1, idx, counts, verify, vnoise, keys, arb, M, zk, zs, zd, zj, zoff)
    if M[M_EXACT]:
        for q in range(m):
            zv[q] = normal_nb(zk[q], zs[q], zd[q], zj[q])
    else:
        normal_fast_gather(zk, zs, zd, zj, m, zv)
        pert = P[P_ZPERT]
        if pert != 0.0:
            for q in range(m):
                zv[q] += pert * math.sin(1000.0 * zv[q])
    for i in range(i0, i1):
        if lookahead > 0:
            prefetch_item(i, lookahead, idx, counts, dev, arb, M, cw, cv)
        update_one(i, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
                   out_ref, out_pulses, out_reads, out_meas, out_capped, zv, zoff[i - i0])
    return zk, zs, zd, zj, zv


@njit(cache=True)
def run_block_call(b, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
                   lookahead, out_ref, out_pulses, out_reads, out_meas, out_capped):
    """:func:`run_block` of block b as an ordinary call with buffers of its own (apply_parallel's
    loop body: no IR-inlined body in a prange loop, see update_one_call)."""
    i0 = b * ITEM_BLOCK
    i1 = min(i0 + ITEM_BLOCK, idx.shape[0])
    bufs = (np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
            np.empty(0, np.float64))
    run_block(i0, i1, idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv,
              lookahead, out_ref, out_pulses, out_reads, out_meas, out_capped, bufs, np.empty(ITEM_BLOCK, np.int64))


@njit(cache=True, parallel=True)
def apply_parallel(idx, counts, t, tol, verify, vnoise, keys, dev, arb, P, M, traj_g, traj_p, cw, cv, lookahead):
    """:func:`apply_serial` on Numba's threads. Deterministic: each item touches only its own
    synapse (idx unique) and draws keyed numbers; counters are per-item outputs summed after."""
    n = idx.shape[0]
    out_ref, out_pulses, out_reads = np.empty(n, np.int8), np.empty(n, np.int64), np.empty(n, np.int64)
    out_meas, out_capped = np.empty(n, np.float32), np.empty(n, np.bool_)
    u_ref, u_pulses, u_reads, u_meas, u_capped = (unmanaged(out_ref), unmanaged(out_pulses), unmanaged(out_reads),
                                                  unmanaged(out_meas), unmanaged(out_capped))
    u_idx, u_counts, u_keys, u_arb, u_P, u_M = (unmanaged(idx), unmanaged(counts), unmanaged(keys), unmanaged(arb),
                                                unmanaged(P), unmanaged(M))
    u_tg, u_tp, u_cw, u_cv = unmanaged(traj_g), unmanaged(traj_p), unmanaged(cw), unmanaged(cv)
    u_dev = unmanaged_dev(dev)
    for b in prange((n + ITEM_BLOCK - 1) // ITEM_BLOCK):     # blocks of items (run_block), one per task
        run_block_call(b, u_idx, u_counts, t, tol, verify, vnoise, u_keys, u_dev, u_arb, u_P, u_M, u_tg, u_tp,
                       u_cw, u_cv, lookahead, u_ref, u_pulses, u_reads, u_meas, u_capped)
    return out_ref, out_pulses, out_reads, out_meas, out_capped


LIST_OK, LIST_RANGE, LIST_ORDER, LIST_COUNT = 0, 1, 2, 3   # scan_list's verdicts


@njit(cache=True)
def scan_list(idx, counts, n_syn, max_count):
    """One pass over a pulse list: (verdict, SET pulses, zero counts). Verdict LIST_RANGE: an index
    outside [0, n_syn); LIST_ORDER: not strictly ascending; LIST_COUNT: |count| >= max_count."""
    total = 0
    zeros = 0
    prev = -1
    for i in range(idx.shape[0]):
        s = idx[i]
        if s < 0 or s >= n_syn:
            return LIST_RANGE, total, zeros
        if s <= prev:
            return LIST_ORDER, total, zeros
        prev = s
        c = counts[i]
        a = c if c >= 0 else -c
        if a >= max_count:
            return LIST_COUNT, total, zeros
        total += a
        zeros += a == 0
    return LIST_OK, total, zeros


# --- whole-array passes ----------------------------------------------------------------------------
# Every prange body below is one ordinary call of a per-item function (never a function inlined at
# Numba-IR level into the parallel loop: see update_one_call).
@njit(cache=True)
def resum_synapse_call(s, t, dev, P, M, cw, cv):
    resum_synapse(s, t, dev, P, M, cw, cv)


@njit(cache=True, parallel=True)
def recompute_all(t, dev, P, M, cw, cv):
    """Every synapse's cache entries at t (:func:`resum_synapse`)."""
    u_dev, u_P, u_M, u_cw, u_cv = unmanaged_dev(dev), unmanaged(P), unmanaged(M), unmanaged(cw), unmanaged(cv)
    for s in prange(cw.shape[0]):
        resum_synapse_call(s, t, u_dev, u_P, u_M, u_cw, u_cv)


@njit(cache=True)
def program_one(s, w, tol, t, keys, dev, P, M, traj_g, traj_p, cw, cv):
    """RESET the 2N devices of synapse s, write w, re-sum its cache entries; (pulses, reads)."""
    for d in range(2 * M[M_N]):
        reset_device(s, d, t, keys[K_RESET], znorm(keys[K_RESET], s, d, 0, P, M), dev, P, M)
    p, r, capped = write_synapse(s, w, tol, t, keys[K_ATT], keys[K_VER], dev, P, M, traj_g, traj_p)
    resum_synapse(s, t, dev, P, M, cw, cv)
    return p, r


@njit(cache=True)
def program_all(w, tol, t, keys, dev, P, M, traj_g, traj_p, cw, cv, out_pulses, out_reads):
    """Initial programming of every synapse (:func:`program_one`); per-synapse counts out."""
    u_dev, u_keys, u_P, u_M = unmanaged_dev(dev), unmanaged(keys), unmanaged(P), unmanaged(M)
    u_tg, u_tp, u_cw, u_cv = unmanaged(traj_g), unmanaged(traj_p), unmanaged(cw), unmanaged(cv)
    for s in range(w.shape[0]):
        p, r = program_one(s, np.float64(w[s]), tol, t, u_keys, u_dev, u_P, u_M, u_tg, u_tp, u_cw, u_cv)
        out_pulses[s] = p
        out_reads[s] = r


@njit(cache=True)
def fabricate_one(s, t, k_reset, k_znu, k_mult, dev, P, M):
    G, H, NU, MU, Z, TP, NS, NR = dev
    for d in range(G.shape[1]):
        Z[s, d] = normal_nb(k_znu, s, d, 0)
        MU[s, d] = max(1.0 + P[P_D2D] * normal_nb(k_mult, s, d, 0), 0.0)   # m = max(1 + std z, 0)
        reset_device(s, d, t, k_reset, znorm(k_reset, s, d, 0, P, M), dev, P, M)
        NR[s, d] = 0                          # the fabrication state is not a counted pulse
        NS[s, d] = 0
        NU[s, d] = drift_exponent(np.float64(G[s, d]), np.float64(Z[s, d]), P, M)


@njit(cache=True)
def fabricate(t, k_reset, k_znu, k_mult, dev, P, M):
    """Construction: z_nu ~ N(0, 1), step_mult = max(1 + d2d z, 0), a RESET (not counted), nu."""
    u_dev, u_P, u_M = unmanaged_dev(dev), unmanaged(P), unmanaged(M)
    for s in range(dev[0].shape[0]):
        fabricate_one(s, t, k_reset, k_znu, k_mult, u_dev, u_P, u_M)


@njit(cache=True)
def drifted_one(s, t, dev, P, M, out):
    G, H, NU, MU, Z, TP, NS, NR = dev
    for d in range(G.shape[1]):
        out[s, d] = drifted(np.float64(G[s, d]), TP[s, d], np.float64(NU[s, d]), t, P, M)


@njit(cache=True)
def drifted_all(t, dev, P, M, out):
    """Drifted conductance G(t) (µS) of every device into ``out`` ([synapse, device])."""
    u_dev, u_P, u_M, u_out = unmanaged_dev(dev), unmanaged(P), unmanaged(M), unmanaged(out)
    for s in range(dev[0].shape[0]):
        drifted_one(s, t, u_dev, u_P, u_M, u_out)


@njit(cache=True)
def read_one(s, t, key, dev, P, M, out):
    G, H, NU, MU, Z, TP, NS, NR = dev
    n = M[M_N]
    w = 0.0
    for d in range(2 * n):
        gp = np.float64(G[s, d])
        tp = TP[s, d]
        g = drifted(gp, tp, np.float64(NU[s, d]), t, P, M)
        r = g + read_sigma(g, gp, tp, t, P, M) * normal_nb(key, s, d, 0)   # read = G(t) + sigma z
        w += r if d < n else -r
    out[s] = P[P_BETA] * w


@njit(cache=True)
def read_all(t, key, dev, P, M, out):
    """One noisy read of every synapse: W = beta sum_d sign_d (G_d(t) + sigma_d z_d) into ``out``."""
    u_dev, u_P, u_M, u_out = unmanaged_dev(dev), unmanaged(P), unmanaged(M), unmanaged(out)
    for s in range(dev[0].shape[0]):
        read_one(s, t, key, u_dev, u_P, u_M, u_out)


@njit(cache=True)
def max_of(a):
    """Largest element of a 2-D array (any layout)."""
    m = -np.inf
    for s in range(a.shape[0]):
        for d in range(a.shape[1]):
            if a[s, d] > m:
                m = a[s, d]
    return m
