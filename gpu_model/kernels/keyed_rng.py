"""Counter-based (keyed) random numbers for the fused device engine: stateless, the same bits on
every backend and thread count.

A draw is a pure function of its key ``(seed, stream, kind, step, synapse, device, draw)``; nothing
is carried from one draw to the next, so the order in which compiled loops (or threads) visit the
synapses cannot change a result, and a run resumed from a checkpoint needs no generator state.

Hash: SplitMix64's finaliser (Steele, Lea & Flood, OOPSLA 2014; the same mixer as
:func:`rtl.golden.shared_rand`), chained over the key fields::

    mix(x)  = SplitMix64 output of state x: z = x + 0x9E3779B97F4A7C15;
              z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB; z ^ z>>31
    key     = mix(mix(mix(mix(seed) ^ stream) ^ kind) ^ step)      # one scalar per call and kind
    h       = mix(mix(key ^ synapse) ^ (device << 32 | draw))       # one 64-bit word per draw

``device`` < 2**16 (index of the device inside its synapse: 0..N-1 the G+ devices, N..2N-1 the
G- devices), ``draw`` < 2**32 (pulse index, programming attempt, ...). All arithmetic is modulo
2**64 (uint64).

Uniform: ``u = ((h >> 11) + 0.5) * 2**-53``: a float64 in the open interval (0, 1) (the 53 top bits
of h, centred in their cell, so neither 0 nor 1 occurs). The NumPy and the Numba versions give
identical bits (tests/test_fused_engine.py).

Standard normal: Box & Muller (1958) on the two 32-bit halves of the same word h:
``u1 = ((h >> 32) + 0.5) * 2**-32``, ``u2 = ((h & (2**32 - 1)) + 0.5) * 2**-32`` (both in (0, 1)),
``z = sqrt(-2 ln u1) cos(2 pi u2)`` (only the cosine branch: a draw stays a function of its own
key; one hash per normal). Computed in float64; NumPy's and Numba's (LLVM/libm) ``log``/``cos``
may differ in the last float64 bit, so the normals are *not guaranteed* bit-identical in float64;
rounded to float32 they agree to within one float32 ulp (in practice identical: a 1-ulp float64
difference flips a float32 rounding with probability ~2**-29 per draw; the test checks both).
|z| <= sqrt(-2 ln 2**-33) = 6.76: the tail beyond 6.76 sigma (probability 1.4e-11 per draw) is
cut, which no device statistic can see.

Fast normals (the kernels' working values, never a definition): :func:`normal_fast_nb` (libm's log,
a branch-free polynomial cos) and :func:`normal_fast_vec` / :func:`normal_fast_fill` /
:func:`normal_fast_fill2` / :func:`normal_fast_gather` (also a polynomial log; vectorised loops) are
within ``NORMAL_FAST_ERR`` of :func:`normal_nb`. ``device_kernels`` keeps a result computed from them
only when its error bound proves it equal to the result from :func:`normal_nb` and recomputes it
otherwise, so the engine's outcomes are those of :func:`normal_nb` (the bounds ``COS_FAST_ERR`` and
``LOG_FAST_ERR`` were checked over all 2^32 arguments: :func:`cos_fast_max_error`,
:func:`log_fast_max_error`).

Kinds (the ``kind`` field: which physical event a number belongs to)
---------------------------------------------------------------------
=========================  =====  ======================================  ==========================
name                       value  event                                   step / device / draw
=========================  =====  ======================================  ==========================
``KIND_SET_STEP``          1      SET-pulse step noise dG ~ N(mu, sigma)  update / pulsed device /
                                                                          pulse index j
``KIND_VERIFY_BEFORE``     2      verified update: read of the pulsed     update / pulsed device / 0
                                  device before its pulses
``KIND_VERIFY_AFTER``      3      verified update: read after its pulses  update / pulsed device / 0
``KIND_VERIFY_REFRESHED``  4      verified update: read of a refreshed    update / 0 / 0
                                  synapse's W after its refresh
``KIND_REFRESH_READ``      5      refresh: read of every device for W     update / device / 0
``KIND_RESET``             6      RESET level G ~ N(reset_mean, std)      update / device / 0
``KIND_PROG_ATTEMPT``      7      programming attempt target + N(0, sd)   update / device / attempt
``KIND_PROG_VERIFY``       8      program-and-verify's verify read        update / device / attempt
``KIND_INIT_RESET``        9      program(): RESET of every device        program call / device / 0
``KIND_INIT_ATTEMPT``      10     program(): programming attempt          program call / dev / att.
``KIND_INIT_VERIFY``       11     program(): verify read                  program call / dev / att.
``KIND_FAB_RESET``         12     construction (fabrication) RESET        0 / device / 0
``KIND_Z_NU``              13     drift-exponent place z_nu ~ N(0, 1)     0 / device / 0
``KIND_STEP_MULT``         14     d2d step multiplier 1 + std N(0, 1)     0 / device / 0
``KIND_READ_WEIGHTS``      15     read_weights(step): one noisy read of   caller's step / device / 0
                                  every device
=========================  =====  ======================================  ==========================

"update" is the tile's update counter that the caller passes to ``FusedSynapses.apply``;
"program call" counts ``FusedSynapses.program`` calls. The synapse field is the flat synapse index
(row-major over the tile's rows x cols). Two events of one kind at the same key would draw the same
number: one update is applied once per step value (the caller's contract).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .intrinsics import bits_f64, f64_bits

KIND_SET_STEP = 1
KIND_VERIFY_BEFORE = 2
KIND_VERIFY_AFTER = 3
KIND_VERIFY_REFRESHED = 4
KIND_REFRESH_READ = 5
KIND_RESET = 6
KIND_PROG_ATTEMPT = 7
KIND_PROG_VERIFY = 8
KIND_INIT_RESET = 9
KIND_INIT_ATTEMPT = 10
KIND_INIT_VERIFY = 11
KIND_FAB_RESET = 12
KIND_Z_NU = 13
KIND_STEP_MULT = 14
KIND_READ_WEIGHTS = 15

KINDS = {name: value for name, value in globals().items() if name.startswith("KIND_")}

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15        # SplitMix64 increment (2^64 / golden ratio)
_MUL1 = 0xBF58476D1CE4E5B9          # SplitMix64 finaliser multipliers (Steele et al. 2014)
_MUL2 = 0x94D049BB133111EB
DEVICE_SHIFT = 32                   # device index sits above the 32-bit draw counter
MAX_DEVICE = 1 << 16                # devices per synapse the key can address (2N <= 65536)
MAX_DRAW = 1 << 32                  # draws per (key, synapse, device)
UNIFORM_BITS = 53                   # float64 mantissa: top 53 bits of the hash make the uniform
_U_SCALE = 2.0 ** -UNIFORM_BITS
HALF_BITS = 32                      # a normal's two uniforms: the high and the low half of one word
_H_SCALE = 2.0 ** -HALF_BITS
_LOW_MASK = (1 << HALF_BITS) - 1
TWO_PI = 2.0 * math.pi


# --- scalar (Python ints): the per-call key ---------------------------------------------------------
def _mix_int(x: int) -> int:
    z = (x + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * _MUL1) & _M64
    z = ((z ^ (z >> 27)) * _MUL2) & _M64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int, kind: int, step: int) -> np.uint64:
    """The per-call key ``mix(mix(mix(mix(seed) ^ stream) ^ kind) ^ step)`` (uint64).

    seed, stream, step: non-negative integers (taken modulo 2**64); kind: one of ``KINDS``."""
    for name, v in (("seed", seed), ("stream", stream), ("step", step)):
        if int(v) < 0:
            raise ValueError(f"keyed RNG: {name} must be >= 0, got {v}")
    if int(kind) not in KINDS.values():
        raise ValueError(f"keyed RNG: unknown kind {kind} (known: {KINDS})")
    k = _mix_int(int(seed) & _M64)
    k = _mix_int(k ^ (int(stream) & _M64))
    k = _mix_int(k ^ int(kind))
    k = _mix_int(k ^ (int(step) & _M64))
    return np.uint64(k)


def key_prefix(seed: int, stream: int) -> np.uint64:
    """``mix(mix(seed) ^ stream)``: the part of :func:`stream_key` fixed for one device array."""
    return np.uint64(_mix_int(_mix_int(int(seed) & _M64) ^ (int(stream) & _M64)))


# --- vectorised NumPy --------------------------------------------------------------------------------
def _mix_np(z):
    """SplitMix64 of a uint64 array (new array; wraps modulo 2**64)."""
    u64 = np.uint64
    z = z + u64(_GOLDEN)
    z = (z ^ (z >> u64(30))) * u64(_MUL1)
    z = (z ^ (z >> u64(27))) * u64(_MUL2)
    return z ^ (z >> u64(31))


def hash_np(key, synapse, device, draw):
    """The 64-bit word of each draw (arrays broadcast): ``mix(mix(key ^ synapse) ^ (device << 32 | draw))``."""
    u64 = np.uint64
    s = np.asarray(synapse).astype(u64)
    sub = (np.asarray(device).astype(u64) << u64(DEVICE_SHIFT)) | np.asarray(draw).astype(u64)
    return _mix_np(_mix_np(s ^ u64(key)) ^ sub)


def uniform_np(key, synapse, device, draw):
    """Uniform float64 in (0, 1) per key (arrays broadcast): ``((h >> 11) + 0.5) * 2**-53``."""
    h = hash_np(key, synapse, device, draw)
    return ((h >> np.uint64(64 - UNIFORM_BITS)).astype(np.float64) + 0.5) * _U_SCALE


def normal_np(key, synapse, device, draw, dtype=np.float64):
    """Standard normal per key (Box-Muller on the two 32-bit halves of the key's word)."""
    h = hash_np(key, synapse, device, draw)
    u1 = ((h >> np.uint64(HALF_BITS)).astype(np.float64) + 0.5) * _H_SCALE
    u2 = ((h & np.uint64(_LOW_MASK)).astype(np.float64) + 0.5) * _H_SCALE
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(TWO_PI * u2)     # z = sqrt(-2 ln u1) cos(2 pi u2)
    return z.astype(dtype, copy=False)


# --- Numba scalar -------------------------------------------------------------------------------------
_U64_GOLDEN = np.uint64(_GOLDEN)
_U64_MUL1 = np.uint64(_MUL1)
_U64_MUL2 = np.uint64(_MUL2)
_U64_30 = np.uint64(30)
_U64_27 = np.uint64(27)
_U64_31 = np.uint64(31)
_U64_SHIFT = np.uint64(DEVICE_SHIFT)
_U64_USHIFT = np.uint64(64 - UNIFORM_BITS)
_U64_HALF = np.uint64(HALF_BITS)
_U64_LOW = np.uint64(_LOW_MASK)


@njit(cache=True, inline="always")
def mix_nb(z):
    """SplitMix64 of one uint64 (compiled)."""
    z = z + _U64_GOLDEN
    z = (z ^ (z >> _U64_30)) * _U64_MUL1
    z = (z ^ (z >> _U64_27)) * _U64_MUL2
    return z ^ (z >> _U64_31)


@njit(cache=True, inline="always")
def hash_nb(key, synapse, device, draw):
    """The 64-bit word of one draw (compiled); same bits as :func:`hash_np`."""
    sub = (np.uint64(device) << _U64_SHIFT) | np.uint64(draw)
    return mix_nb(mix_nb(np.uint64(synapse) ^ key) ^ sub)


@njit(cache=True, inline="always")
def uniform_nb(key, synapse, device, draw):
    """Uniform float64 in (0, 1) of one key (compiled); same bits as :func:`uniform_np`."""
    h = hash_nb(key, synapse, device, draw)
    return (np.float64(h >> _U64_USHIFT) + 0.5) * _U_SCALE


@njit(cache=True, inline="always")
def normal_nb(key, synapse, device, draw):
    """Standard normal float64 of one key (compiled); :func:`normal_np` to float32 rounding."""
    h = hash_nb(key, synapse, device, draw)
    u1 = (np.float64(h >> _U64_HALF) + 0.5) * _H_SCALE
    u2 = (np.float64(h & _U64_LOW) + 0.5) * _H_SCALE
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(TWO_PI * u2)   # z = sqrt(-2 ln u1) cos(2 pi u2)


# --- fast normals with an error bound (the certified path of device_kernels) -------------------------
# cos(2 pi u2) without libm: u2 = (b + 0.5) 2^-32 (b the low half of the word) is reduced on the
# integer b to the nearest quarter turn, q = round(b / 2^30), r = b - q 2^30 in [-2^29, 2^29), exactly;
# theta = (r + 0.5) 2 pi 2^-32 in [-pi/4, pi/4]; cos(2 pi u2) = (cos th, -sin th, -cos th, sin th)[q mod 4],
# sin and cos of th by the fdlibm kernel polynomials (FreeBSD msun k_sin.c / k_cos.c, |error| < 2^-58
# on [-pi/4, pi/4]). No branch on the (random) quadrant survives compilation, so the cost is ~10 ns
# where libm's cos takes 20-35 ns on uniformly spread arguments (its range branches mispredict).
QUARTER_BITS = 30                   # 2^30 = a quarter turn of the 32-bit u2 counter
_Q_HALF = 1 << (QUARTER_BITS - 1)   # rounding offset of the quadrant (an eighth of a turn)
_TH_SCALE = TWO_PI * _H_SCALE       # radians per unit of r
_KS1, _KS2, _KS3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_KS4, _KS5, _KS6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_KC1, _KC2, _KC3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_KC4, _KC5, _KC6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
COS_FAST_ERR = 2.0 ** -48           # bound on |cos2pi_fast(b) - math.cos(TWO_PI u2(b))| for every b < 2^32:
                                    # measured max 6.7e-16 = 2^-50.4 over all 2^32 values (cos_fast_max_error,
                                    # glibc 2.36); 2^-48 = 3.6e-15 keeps a 5x margin for other libms
# ln u1 without libm (vectorisable): u1 = m 2^e with m in [sqrt(2)/2, sqrt(2)) (integer operations on
# its bits), f = m - 1 (exact), ln m = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), R the fdlibm
# e_log.c polynomial (Lg1..Lg7, |error| < 2^-58.45), ln u1 = e ln2_hi + (ln m + e ln2_lo).
_LG1, _LG2, _LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_LG4, _LG5, _LG6, _LG7 = 2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01, \
    1.479819860511658591e-01
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10   # ln 2 = hi + lo (fdlibm)
_HALF_SQRT2_BITS = 0x3FE6A09E667F3BCD   # bits of sqrt(2)/2: below it the mantissa is doubled
_EXP_SHIFT = 52                         # float64 mantissa bits
LOG_FAST_ERR = 2.0 ** -48           # bound on |log_fast(u1) / math.log(u1) - 1| for every u1 of a draw:
                                    # measured max 2.2e-16 = 2^-52 over all 2^32 values (log_fast_max_error,
                                    # glibc 2.36); 2^-48 keeps a 16x margin for other libms
R_MAX = 6.76                        # > sqrt(-2 ln(2^-33)) = 6.7559: the largest Box-Muller radius of a draw
NORMAL_FAST_ERR = R_MAX * (COS_FAST_ERR + LOG_FAST_ERR / 2 + 2.0 ** -50)
# |normal_fast_nb - normal_nb| <= R_MAX |cos error| + r |sqrt(L') / sqrt(L) - 1| (<= LOG_FAST_ERR / 2 + the
# sqrt's and -2 L's roundings) + the product's rounding; each rounding <= 2^-53 relative


@njit(cache=True, inline="always")
def cos2pi_fast(b):
    """cos(2 pi (b + 0.5) 2^-32) for an integer 0 <= b < 2^32 (int64), to COS_FAST_ERR of libm's."""
    m = (b + _Q_HALF) >> QUARTER_BITS
    r = b - (m << QUARTER_BITS)
    th = (np.float64(r) + 0.5) * _TH_SCALE
    z = th * th
    sn = th + th * z * (_KS1 + z * (_KS2 + z * (_KS3 + z * (_KS4 + z * (_KS5 + z * _KS6)))))
    cs = 1.0 - 0.5 * z + z * z * (_KC1 + z * (_KC2 + z * (_KC3 + z * (_KC4 + z * (_KC5 + z * _KC6)))))
    v = sn if m & 1 else cs
    return -v if (m + 1) & 2 else v


@njit(cache=True, inline="always")
def log_fast(x):
    """ln x for a positive normal float64 x, to LOG_FAST_ERR (relative) of libm's log."""
    b = f64_bits(x)
    e = (b - _HALF_SQRT2_BITS) >> _EXP_SHIFT        # x = m 2^e, m in [sqrt(2)/2, sqrt(2))
    m = bits_f64(b - (e << _EXP_SHIFT))
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    dk = np.float64(e)
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + (t1 + t2)) + dk * _LN2_LO)) - f)


@njit(cache=True, inline="always")
def normal_fast_nb(key, synapse, device, draw):
    """:func:`normal_nb` with :func:`cos2pi_fast` for libm's cos (the same u1, libm's log and sqrt):
    within NORMAL_FAST_ERR of it. The kernels use it where a result is then certified (device_kernels).
    One draw at a time; :func:`normal_fast_fill` draws many in a vectorised loop."""
    h = hash_nb(key, synapse, device, draw)
    u1 = (np.float64(h >> _U64_HALF) + 0.5) * _H_SCALE
    return math.sqrt(-2.0 * math.log(u1)) * cos2pi_fast(np.int64(h & _U64_LOW))


@njit(cache=True, inline="always")
def normal_fast_vec(key, synapse, device, draw):
    """:func:`normal_fast_nb` with :func:`log_fast` for libm's log (no call: vectorisable), within
    NORMAL_FAST_ERR of :func:`normal_nb` too (one scalar draw: libm's log is the faster)."""
    h = hash_nb(key, synapse, device, draw)
    u1 = (np.float64(h >> _U64_HALF) + 0.5) * _H_SCALE
    return math.sqrt(-2.0 * log_fast(u1)) * cos2pi_fast(np.int64(h & _U64_LOW))


@njit(cache=True, error_model="numpy")
def normal_fast_fill(key, synapse, d0, dd, j0, dj, n, out):
    """out[i] = normal_fast_vec(key, synapse, d0 + i dd, j0 + i dj) for i < n: one loop without
    branches or calls, which LLVM vectorises (error_model "numpy": no zero-division check);
    ~3 ns a draw with AVX-512 where one normal_fast_nb takes ~10 ns."""
    for i in range(n):
        out[i] = normal_fast_vec(key, synapse, d0 + i * dd, j0 + i * dj)


@njit(cache=True, error_model="numpy")
def normal_fast_fill2(key, synapse, d0, jbits, n, out):
    """out[i] = normal_fast_vec(key, synapse, d0 + (i >> jbits), i mod 2^jbits) for i < n: the first
    2^jbits draws of consecutive devices, in one vectorised loop (as :func:`normal_fast_fill`)."""
    mask = (1 << jbits) - 1
    for i in range(n):
        out[i] = normal_fast_vec(key, synapse, d0 + (i >> jbits), i & mask)


@njit(cache=True, error_model="numpy")
def normal_fast_gather(keys, synapse, device, draw, n, out):
    """out[i] = normal_fast_vec(keys[i], synapse[i], device[i], draw[i]) for i < n (a vectorised pass
    over a list of draws: the pulse list's draws of a block of items)."""
    for i in range(n):
        out[i] = normal_fast_vec(keys[i], synapse[i], device[i], draw[i])


@njit(cache=True, parallel=True)
def log_fast_max_error(start, stop):
    """max |log_fast(u1) / log(u1) - 1| over the u1 of start <= a < stop (the check of LOG_FAST_ERR)."""
    chunk = 1 << 20
    n_chunks = (stop - start + chunk - 1) // chunk
    worst = np.zeros(n_chunks)
    for c in prange(n_chunks):
        lo = start + c * chunk
        hi = min(lo + chunk, stop)
        e = 0.0
        for a in range(lo, hi):
            u1 = (np.float64(a) + 0.5) * _H_SCALE
            ref = math.log(u1)
            e = max(e, abs(log_fast(u1) - ref) / abs(ref))
        worst[c] = e
    return worst.max()


@njit(cache=True, parallel=True)
def cos_fast_max_error(start, stop):
    """max |cos2pi_fast(b) - cos(TWO_PI u2(b))| over start <= b < stop (the check of COS_FAST_ERR;
    all of [0, 2^32) takes minutes: tests sample it)."""
    chunk = 1 << 20
    n_chunks = (stop - start + chunk - 1) // chunk
    worst = np.zeros(n_chunks)
    for c in prange(n_chunks):
        lo = start + c * chunk
        hi = min(lo + chunk, stop)
        e = 0.0
        for b in range(lo, hi):
            x = TWO_PI * ((np.float64(b) + 0.5) * _H_SCALE)
            e = max(e, abs(cos2pi_fast(b) - math.cos(x)))
        worst[c] = e
    return worst.max()


@njit(cache=True)
def normal_fast_nb_array(key, synapse, device, draw, vec=False):
    """:func:`normal_fast_nb` (``vec``: :func:`normal_fast_vec`) over 1-D int64 arrays of equal length
    (for tests)."""
    n = synapse.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        if vec:
            out[i] = normal_fast_vec(key, synapse[i], device[i], draw[i])
        else:
            out[i] = normal_fast_nb(key, synapse[i], device[i], draw[i])
    return out


@njit(cache=True)
def uniform_nb_array(key, synapse, device, draw):
    """:func:`uniform_nb` over 1-D int64 arrays of equal length (for tests and bulk draws)."""
    n = synapse.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = uniform_nb(key, synapse[i], device[i], draw[i])
    return out


@njit(cache=True)
def normal_nb_array(key, synapse, device, draw):
    """:func:`normal_nb` over 1-D int64 arrays of equal length (for tests and bulk draws)."""
    n = synapse.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = normal_nb(key, synapse[i], device[i], draw[i])
    return out


@njit(cache=True)
def stream_keys_nb(prefix, kinds, step):
    """:func:`stream_key` of each kind in ``kinds`` (int64 array) at ``step``, from the
    :func:`key_prefix` of (seed, stream): ``mix(mix(prefix ^ kind) ^ step)`` (uint64 array)."""
    out = np.empty(kinds.shape[0], np.uint64)
    for i in range(kinds.shape[0]):
        out[i] = mix_nb(mix_nb(prefix ^ np.uint64(kinds[i])) ^ np.uint64(step))
    return out
